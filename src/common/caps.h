/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The process's own capabilities. */
#ifndef LAMINA_CAPS_H
#define LAMINA_CAPS_H

#include <stdbool.h>

/* Whether the calling thread has capability cap (CAP_*) in its effective
 * set; false when that cannot be read. */
bool have_capability(int cap);

#endif
