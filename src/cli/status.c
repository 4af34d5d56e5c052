// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina status. */
#include "cli.h"

#include <stdio.h>

int cmd_status(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: status is not available yet\n");
	return EXIT_USAGE;
}
