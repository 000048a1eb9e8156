/*
 * cli: commands for the principal at a terminal, talking to a running wallet:
 *   mandate-wallet approvals   --config FILE [--admin-token-file F]   list pending approvals
 *   mandate-wallet approve ID  --config FILE [--admin-token-file F]
 *   mandate-wallet deny ID     --config FILE [--admin-token-file F]
 * The admin token comes from the file or $MANDATE_WALLET_ADMIN_TOKEN. And, for merchants, offline:
 *   mandate-wallet sign-cart --key KEY.pem --kid K --merchant M --principal P --action A
 *                            --items ITEMS.json [--ttl S] [--intent JTI]     prints a cart JWS
 */
#ifndef WALLET_CLI_H
#define WALLET_CLI_H

/** Run command argv[0] ("approvals", "approve", "deny"); returns the exit status. */
int cli_main(int argc, char **argv);
/** Run `sign-cart` with argv[0] "sign-cart"; prints the cart mandate; returns the exit status. */
int cli_sign_cart(int argc, char **argv);

#endif
