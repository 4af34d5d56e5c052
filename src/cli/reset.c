// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina reset. */
#include "cli.h"

#include <stdio.h>

int cmd_reset(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: reset is not available yet\n");
	return EXIT_USAGE;
}
