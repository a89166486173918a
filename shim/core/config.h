/* The configuration of this process (config.c): the settings read once, validated, frozen. */
#ifndef SHIM_CORE_CONFIG_H
#define SHIM_CORE_CONFIG_H

#include "settings.h"

/* The frozen configuration; loads it on first use (before the front-end's start if need be).
 * A bad value in the environment ends the process with one line naming the variable. */
const struct shim_config *shim_config(void);
/* Where each effective setting came from (for proxyshim_settings()). */
const struct shim_settings_src *shim_config_src(void);

#endif
