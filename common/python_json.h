// How DeepSpeed's Python code sees JSON config values, so tpcoord decides and prints exactly as it does.
#ifndef TPCOORD_COMMON_PYTHON_JSON_H_
#define TPCOORD_COMMON_PYTHON_JSON_H_

#include <string>

#include "nlohmann/json.hpp"

namespace tpcoord {

// Python truthiness: null, false, 0, 0.0, "", [] and {} are false; everything else (including "auto" and
// "false") is true.
bool PyTruthy(const nlohmann::json& value);

// Python's `value == n` for an int n: numbers compare numerically, true/false count as 1/0, and strings,
// lists, dicts and None are never equal to an int.
bool PyEqualsInt(const nlohmann::json& value, long long n);

// Python's str() of the value as DeepSpeed formats it into a message (G28): strings without quotes,
// everything else as JSON text (`2`, `2.5`, `true`, `[1, 2]`).
std::string PyStr(const nlohmann::json& value);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_PYTHON_JSON_H_
