/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The names of the generic mount flags, as mount(8) writes them. */
#ifndef LAMINA_MOUNTFLAGS_H
#define LAMINA_MOUNTFLAGS_H

#include <stddef.h>

/*
 * Append ",name" to buf for each MS_* flag set in flags that has an
 * option name, in a fixed order. Names that do not fit are left out.
 */
void mount_flags_append(char *buf, size_t size, unsigned long flags);

#endif
