/* startrace as a preloaded library: its constructor runs the race of tests/e2e/progs/startrace.c
 * (the same source), so the hooks' first calls come before the shim's own constructor. Listed
 * after the shim in LD_PRELOAD ("libproxyshim.so libstartrace.so"): the shim's hooks are found
 * first, and glibc runs the constructors of preloaded libraries last listed first. */
#define STARTRACE_CTOR 1
#include "../progs/startrace.c"
