/*
 * cli: commands for the principal at a terminal, talking to a running wallet:
 *   mandate-wallet approvals   --config FILE [--admin-token-file F]   list pending approvals
 *   mandate-wallet approve ID  --config FILE [--admin-token-file F]
 *   mandate-wallet deny ID     --config FILE [--admin-token-file F]
 * The admin token comes from the file or $MANDATE_WALLET_ADMIN_TOKEN.
 */
#ifndef WALLET_CLI_H
#define WALLET_CLI_H

/** Run command argv[0] ("approvals", "approve", "deny"); returns the exit status. */
int cli_main(int argc, char **argv);

#endif
