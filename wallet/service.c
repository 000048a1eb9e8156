/*
 * service: not serving yet; the API lands with the wallet issue.
 */
#include "wallet/service.h"

#include "core/log.h"

int service_run(struct wallet_config *w)
{
    log_error("serving is not implemented yet; use --check-config");
    wallet_config_free(w);
    return 2;
}
