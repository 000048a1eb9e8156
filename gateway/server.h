/*
 * server: the gateway process: workers, admin listener, signals.
 */
#ifndef GATEWAY_SERVER_H
#define GATEWAY_SERVER_H

#include "gateway/config.h"

/** Serve conf (takes ownership) until SIGTERM; returns the exit status. */
int server_run(struct config *conf);

#endif
