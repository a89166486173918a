/* What every part of the core and its front-ends shares: visibility and branch hints. */
#ifndef SHIM_CORE_BASE_H
#define SHIM_CORE_BASE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHIM_HIDDEN __attribute__((visibility("hidden")))
#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SHIM_LIKELY(x) __builtin_expect(!!(x), 1)

#endif
