/* Whether a peer may send a PROXY header (trust.c): the trusted CIDRs of the configuration. */
#ifndef SHIM_CORE_TRUST_H
#define SHIM_CORE_TRUST_H

#include <sys/socket.h>

#include "config.h"

bool shim_trusted(const struct shim_config *c, const struct sockaddr *peer);

#endif
