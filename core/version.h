/* version: the one version string all three programs print. */
#ifndef CORE_VERSION_H
#define CORE_VERSION_H
#define MANDATE_VERSION "0.1.0"
#endif
