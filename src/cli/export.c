// SPDX-License-Identifier: GPL-2.0-or-later
/* lamina export. */
#include "cli.h"

#include <stdio.h>

int cmd_export(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "lamina: export is not available yet\n");
	return EXIT_USAGE;
}
