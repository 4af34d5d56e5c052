// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina import. */
#include "cli.h"

#include <stdio.h>

int cmd_import(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: import is not available yet\n");
	return EXIT_USAGE;
}
