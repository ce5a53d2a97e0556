// What every tpcoord binary does first: parse its command line and set up process-wide defaults.
#ifndef TPCOORD_COMMON_PROCESS_INIT_H_
#define TPCOORD_COMMON_PROCESS_INIT_H_

#include <vector>

namespace tpcoord {

// Parses argv with absl::ParseCommandLine, accepting "--foo-bar[=v]" for the Abseil flag foo_bar (up to a
// bare "--"), so command lines read the way users expect (--state-dir, --tp-size). Also turns off Abseil's
// mutex deadlock detection, which Debian's Abseil build leaves on and which costs gRPC several percent of
// its CPU on every lock. Returns the positional arguments (argv[0] first).
std::vector<char*> InitProcess(int argc, char** argv);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_PROCESS_INIT_H_
