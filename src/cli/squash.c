// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina squash. */
#include "cli.h"

#include <stdio.h>

int cmd_squash(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: squash is not available yet\n");
	return EXIT_USAGE;
}
