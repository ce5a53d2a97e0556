// Command lines in the style users expect (--state-dir, --tp-size) on top of Abseil flags, whose names
// use underscores (state_dir, tp_size).
#ifndef TPCOORD_COMMON_CLI_FLAGS_H_
#define TPCOORD_COMMON_CLI_FLAGS_H_

#include <vector>

namespace tpcoord {

// Parses argv with absl::ParseCommandLine after rewriting "--foo-bar[=v]" to "--foo_bar[=v]" (up to a bare
// "--"), and returns the positional arguments (argv[0] first).
std::vector<char*> ParseCommandLineWithDashes(int argc, char** argv);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_CLI_FLAGS_H_
