/*
 * keygen: `mandate-wallet keygen`, which writes a new private key (PKCS#8 PEM, mode 0600),
 * its public JWKS and optionally its public PEM. It never overwrites an existing file.
 */
#ifndef WALLET_KEYGEN_H
#define WALLET_KEYGEN_H

/** Run the keygen command with argv after "keygen"; returns the exit status. */
int keygen_main(int argc, char **argv);

#endif
