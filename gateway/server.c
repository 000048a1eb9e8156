/*
 * server: not serving yet; the proxy lands with the gateway issue.
 */
#include "gateway/server.h"

#include "core/log.h"

int server_run(struct config *conf)
{
    log_error("serving is not implemented yet; use --check-config");
    config_free(conf);
    return 2;
}
