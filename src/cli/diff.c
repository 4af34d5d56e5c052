// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina diff. */
#include "cli.h"

#include <stdio.h>

int cmd_diff(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: diff is not available yet\n");
	return EXIT_USAGE;
}
