/*
 * admin: the admin listener (SPEC §2.3) on the main thread's event loop: health, metrics,
 * revocations and the newest checkpoint. Everything but /livez, /readyz and /metrics needs
 * `Authorization: Bearer <token>` whose SHA-256 is admin.token_sha256, compared in constant time.
 */
#ifndef GATEWAY_ADMIN_H
#define GATEWAY_ADMIN_H

#include "gateway/server.h"

struct admin;

/** Listen on conf's admin address on s->base; NULL with *err. */
struct admin *admin_start(struct server *s, const struct config *conf, char **err) MUST_CHECK;
/** Stop listening and free; NULL is a no-op. */
void admin_free(struct admin *a);

#endif
