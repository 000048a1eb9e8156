/*
 * service: the wallet's HTTP API (SPEC §3).
 */
#ifndef WALLET_SERVICE_H
#define WALLET_SERVICE_H

#include "wallet/config.h"

/** Serve w (takes ownership) until SIGTERM; returns the exit status. */
int service_run(struct wallet_config *w);

#endif
