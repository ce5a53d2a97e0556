#include "common/python_json.h"

namespace tpcoord {

bool PyTruthy(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return false;
    case nlohmann::json::value_t::boolean: return value.get<bool>();
    case nlohmann::json::value_t::number_integer: return value.get<long long>() != 0;
    case nlohmann::json::value_t::number_unsigned: return value.get<unsigned long long>() != 0;
    case nlohmann::json::value_t::number_float: return value.get<double>() != 0.0;
    case nlohmann::json::value_t::string: return !value.get_ref<const std::string&>().empty();
    case nlohmann::json::value_t::array:
    case nlohmann::json::value_t::object: return !value.empty();
    default: return true;
  }
}

bool PyEqualsInt(const nlohmann::json& value, long long n) {
  switch (value.type()) {
    case nlohmann::json::value_t::boolean: return (value.get<bool>() ? 1 : 0) == n;
    case nlohmann::json::value_t::number_integer: return value.get<long long>() == n;
    case nlohmann::json::value_t::number_unsigned:
      return n >= 0 && value.get<unsigned long long>() == static_cast<unsigned long long>(n);
    case nlohmann::json::value_t::number_float: return value.get<double>() == static_cast<double>(n);
    default: return false;
  }
}

std::string PyStr(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

}  // namespace tpcoord
