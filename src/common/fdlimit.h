/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The limit on open files, which the daemon and the tree walks raise. */
#ifndef LAMINA_FDLIMIT_H
#define LAMINA_FDLIMIT_H

#include <sys/resource.h>

/*
 * Raise the soft limit on open files (RLIMIT_NOFILE) to the hard limit,
 * which needs no privilege. When rl is not NULL, it receives the limits
 * in force afterwards. Returns 0 or a negative errno.
 */
int fdlimit_raise(struct rlimit *rl);

#endif
