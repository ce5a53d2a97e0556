// This machine's host name, as workers report it and as a coordinator listening on a wildcard address
// advertises itself.
#ifndef TPCOORD_COMMON_HOST_NAME_H_
#define TPCOORD_COMMON_HOST_NAME_H_

#include <string>

namespace tpcoord {

// gethostname(), or "localhost" when the machine has none.
std::string LocalHostName();

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_HOST_NAME_H_
