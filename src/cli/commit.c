// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina commit. */
#include "cli.h"

#include <stdio.h>

int cmd_commit(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: commit is not available yet\n");
	return EXIT_USAGE;
}
