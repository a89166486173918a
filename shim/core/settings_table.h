/* The settings, one row each: the one list the library's parser (environment and file), its
 * proxyshim_settings() lines, and the wrapper's options and --help are made from. Rows are in
 * the order `proxyshim --check` prints them; PROXYSHIM_CONFIG comes last (it names the file,
 * and is neither a key of that file nor a line of its own in --check).
 *
 * X(ID, KIND, WORDS, LO, HI, DEFAULT, WHY, RANK, FIELD, BASE, FLAG, META, HELP_RANK, HELP)
 *   ID        the name after PROXYSHIM_
 *   KIND      CHOICE (one of WORDS; FIELD takes the word's index + BASE), UINT (digits, no
 *             sign, no leading zero, LO to HI), CIDRS, PORTS, PATH (absolute), FILE
 *   DEFAULT   the value when unset, as --check prints it (CHOICE and UINT defaults are parsed
 *             like a value)
 *   WHY       the message's end for a bad value: "invalid NAME="value": WHY"
 *   RANK      the order values are checked in (the first bad one is the one said)
 *   FIELD     the member of struct shim_config (core/settings.h) that holds it
 *   FLAG      the wrapper's option (a contract: scripts use it; every row has one), META its
 *             value's name, HELP_RANK its place in --help, HELP its text there (lines after
 *             the first are indented under the first)
 */
#ifndef SHIM_CORE_SETTINGS_TABLE_H
#define SHIM_CORE_SETTINGS_TABLE_H

#include <stddef.h>

#define SHIM_WORDS(...) ((const char *const[]){__VA_ARGS__, NULL})

#define SHIM_SETTINGS(X)                                                                          \
	X(TRUSTED, CIDRS, NULL, 0, 0, "",                                                         \
	  "expected IPv4/IPv6 addresses or CIDRs (or *), separated by commas or spaces", 13, cidrs, 0, \
	  "--trusted", "CIDRS", 0,                                                                 \
	  "the peers allowed to send a header, IPv4/IPv6\n"                                       \
	  "addresses and CIDRs separated by commas or spaces, or *.\n"                            \
	  "Without it (and without the variable) the shim does nothing.")                         \
	X(VERSION, CHOICE, SHIM_WORDS("v1", "v2", "any"), 0, 0, "any", "expected v1, v2 or any", 1, \
	  versions, PP_V1, "--protocol", "V", 1,                                                  \
	  "the PROXY protocol versions accepted: v1, v2\n"                                        \
	  "or any (default any).")                                                                \
	X(MODE, CHOICE, SHIM_WORDS("strict", "optional"), 0, 0, "strict",                          \
	  "expected strict or optional", 2, mode, 0, "--mode", "M", 2, "strict (default) or optional.") \
	X(PORTS, PORTS, NULL, 1, 65535, "all",                                                     \
	  "expected ports 1-65535 and ranges LO-HI, separated by commas or spaces", 8, ports, 0,   \
	  "--ports", "LIST", 3,                                                                    \
	  "local ports and ranges, e.g. 443,8000-8099\n"                                          \
	  "(default: every TCP port).")                                                            \
	X(TIMEOUT_MS, UINT, NULL, 1, 600000, "1000", "expected milliseconds, 1 to 600000", 9,      \
	  timeout_ms, 0, "--timeout-ms", "N", 4,                                                   \
	  "the longest a header may take, 1 to 600000\n"                                          \
	  "(default 1000).")                                                                       \
	X(MAX_PARKED, UINT, NULL, 1, 1000000, "1024", "expected a count, 1 to 1000000", 10,       \
	  max_parked, 0, "--max-parked", "N", 11,                                                 \
	  "connections parked (header awaited) at once\n"                                         \
	  "in a process, 1 to 1000000 (default 1024).")                                           \
	X(DEFER_ACCEPT, CHOICE, SHIM_WORDS("0", "1"), 0, 0, "1", "expected 1 or 0", 5,             \
	  defer_accept, 0, "--defer-accept", "0|1", 12,                                           \
	  "1 (default): TCP_DEFER_ACCEPT on covered\n"                                            \
	  "listeners.")                                                                           \
	X(LOG, CHOICE, SHIM_WORDS("off", "error", "warn", "info", "debug"), 0, 0, "warn",          \
	  "expected off, error, warn, info or debug", 0, log_level, 0, "--log", "LEVEL", 13,      \
	  "off, error, warn (default), info or debug.")                                           \
	X(CONSUME, CHOICE, SHIM_WORDS("accept", "lazy"), 0, 0, "accept",                           \
	  "expected accept or lazy", 3, lazy, 0, "--consume", "C", 5,                              \
	  "accept (default) or lazy, for protocols in\n"                                          \
	  "which the server speaks first (SSH, SMTP, FTP) behind balancers\n"                     \
	  "that send the header only with the client's first bytes.")                             \
	X(LAZY_GRACE_MS, UINT, NULL, 0, 600000, "250", "expected milliseconds, 0 to 600000", 15,  \
	  lazy_grace_ms, 0, "--lazy-grace", "MS", 6,                                              \
	  "lazy mode: how long accept() holds a connection\n"                                      \
	  "whose header has not arrived (parked: the program is not\n"                             \
	  "blocked), 0 to 600000 (default 250; 0: returned at once).")                             \
	X(LOCAL_ADDR, CHOICE, SHIM_WORDS("real", "header"), 0, 0, "real",                          \
	  "expected real or header", 4, local_from_header, 0, "--local-addr", "L", 8,             \
	  "real (default) or header: getsockname()\n"                                             \
	  "gives the header's destination.")                                                      \
	X(KEEP_TLVS, CHOICE, SHIM_WORDS("0", "1"), 0, 0, "0", "expected 1 or 0", 6, keep_tlvs, 0, \
	  "--keep-tlvs", "0|1", 9, "1: keep the header's TLVs for proxyshim_tlv()\n"              \
	  "(default 0).")                                                                         \
	X(TLV_MAX, UINT, NULL, 0, 65535, "4096", "expected bytes, 0 to 65535", 11, tlv_max, 0,     \
	  "--tlv-max", "BYTES", 10, "bytes of TLVs kept per connection,\n"                        \
	  "0 to 65535 (default 4096).")                                                           \
	X(STATS, PATH, NULL, 0, 0, "", "expected an absolute file path", 12, stats_path, 0,        \
	  "--stats", "FILE", 14, "write Prometheus counters to FILE.")                            \
	X(UNTRUSTED, CHOICE, SHIM_WORDS("pass", "reject"), 0, 0, "pass",                           \
	  "expected pass or reject", 7, untrusted_reject, 0, "--untrusted", "U", 7,               \
	  "pass (default) or reject: a header from an\n"                                          \
	  "untrusted peer closes its connection.")                                                \
	X(CONFIG, FILE, NULL, 0, 0, "/etc/proxyshim.conf", "", 14, config_file, 0, "--config", "FILE", \
	  15, "the configuration file, KEY=VALUE lines\n"                                         \
	  "(default /etc/proxyshim.conf).")

/* SHIM_S_TRUSTED ...: a setting's row. */
enum shim_setting_id {
#define SHIM_SETTING_ID(ID, ...) SHIM_S_##ID,
	SHIM_SETTINGS(SHIM_SETTING_ID)
#undef SHIM_SETTING_ID
	SHIM_NSETTINGS
};

enum shim_setting_kind { SHIM_SK_CHOICE, SHIM_SK_UINT, SHIM_SK_CIDRS, SHIM_SK_PORTS, SHIM_SK_PATH, SHIM_SK_FILE };

struct shim_setting {
	const char *name; /* "PROXYSHIM_..." */
	unsigned char kind;
	signed char rank, help_rank;
	const char *const *words; /* CHOICE: NULL-terminated */
	unsigned lo, hi;          /* UINT */
	const char *dflt, *why;
	const char *flag, *meta, *help;
};

/* The rows as data, for loops that need no field of struct shim_config: the library's
 * shim_settings[] (core/settings.h) is this, and so is the wrapper's own copy (it does not
 * link the library). */
#define SHIM_SETTING_ROW(ID, KIND, WORDS, LO, HI, DEFAULT, WHY, RANK, FIELD, BASE, FLAG, META, HRANK, HELP) \
	{"PROXYSHIM_" #ID, SHIM_SK_##KIND, RANK, HRANK, WORDS, LO, HI, DEFAULT, WHY, FLAG, META, HELP},
#define SHIM_SETTINGS_ROWS {SHIM_SETTINGS(SHIM_SETTING_ROW)}

#endif
