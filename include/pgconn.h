/* libpq connections: how pgsweeper opens one. */
#pragma once

#include <libpq-fe.h>

/* Start a non-blocking connection (drive it with PQconnectPoll). pgsweeper
 * adds a fallback application_name; the user's conninfo wins otherwise.
 * NULL only when out of memory. */
PGconn *pg_connect_start(const char *conninfo);

/* The conninfo's connect_timeout in seconds (libpq enforces it only for
 * blocking connects; the caller's timer does it here), or fallback. */
unsigned pg_connect_timeout_sec(const char *conninfo, unsigned fallback);
