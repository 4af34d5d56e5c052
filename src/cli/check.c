// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina check: every reason a mount of these layers would fail or
 * misbehave, without mounting and without touching workdir/work.
 */
#include "cli.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void print_finding(void *arg, enum ovl_check_level level,
			  const char *msg)
{
	(void)arg;
	if (level == OVL_CHECK_WARN)
		fprintf(stderr, "lamina: warning: %s\n", msg);
	else
		printf("lamina: %s\n", msg);
}

static void print_error(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "lamina: error: %s\n", msg);
}

/* lamina mount shows the warnings, which do not stop it. */
void cli_print_warning(void *arg, enum ovl_check_level level, const char *msg)
{
	if (level == OVL_CHECK_WARN)
		print_finding(arg, level, msg);
}

static int check_parse(int argc, char **argv, struct ovl_config *cfg,
		       const char **merged)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ovl_error e = {{0}};
	int c;

	cfg->passthrough = true;
	cfg->io_uring = true;
	cfg->prefetch = true;
	optind = 1;
	opterr = 0;
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		}
		if (c == ':') {
			return cli_missing_argument("check", argv[optind - 1]);
		}
		if (c != 'o') {
			fprintf(
			    stderr,
			    "lamina: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
		if (ovl_parse_options(cfg, optarg, &e)) {
			fprintf(stderr, "lamina: %s\n", e.msg);
			return EXIT_USAGE;
		}
	}
	if (ovl_config_finish(cfg, &e)) {
		fprintf(stderr, "lamina: %s\n", e.msg);
		return EXIT_USAGE;
	}
	if (optind < argc - 1) {
		fputs("lamina: usage: lamina check -o OPTIONS [MERGED]\n",
		      stderr);
		return EXIT_USAGE;
	}
	*merged = optind == argc - 1 ? argv[optind] : NULL;
	return 0;
}

/* The mount point must be a directory, as lamina mount requires. Setup
 * then also checks that no layer lies inside it. Returns the number of
 * errors printed. */
static int check_mountpoint(const char *merged, struct ovl_config *cfg)
{
	char real[PATH_MAX];
	struct stat st;

	if (!realpath(merged, real) || stat(real, &st) < 0) {
		int err = errno;

		fprintf(stderr, "lamina: error: mount point %s: %s; %s\n",
			merged, strerror(err), cli_mountpoint_advice(err));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(
		    stderr,
		    "lamina: error: mount point %s: not a directory; give a directory\n",
		    merged);
		return 1;
	}
	cfg->mountpoint = strdup(real);
	return 0;
}

/* Print the findings and the closing line; returns the exit status. */
static int check_report(struct ovl_fs *fs, int errors)
{
	int warnings = ovl_check_report(fs, print_finding, NULL);

	if (errors) {
		fprintf(stderr, "lamina: %d error%s: the mount would fail\n",
			errors, errors == 1 ? "" : "s");
		return EXIT_CHECK_ERROR;
	}
	if (warnings) {
		printf(
		    "lamina: the layers can be mounted, with the warning%s above\n",
		    warnings == 1 ? "" : "s");
		return EXIT_CHECK_WARNING;
	}
	printf("lamina: the layers can be mounted\n");
	return 0;
}

int cmd_check(int argc, char **argv)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	struct ovl_error e = {{0}};
	const char *merged = NULL;
	int rc;

	if (!fs)
		return EXIT_CHECK_ERROR;
	rc = check_parse(argc, argv, &fs->config, &merged);
	if (rc) {
		ovl_config_free(&fs->config);
		free(fs);
		return rc;
	}
	fs->check_only = true;
	cli_note_kernel_overlays(fs);
	e.more = print_error;
	if (merged)
		e.count = check_mountpoint(merged, &fs->config);
	if (ovl_fs_setup(fs, &e)) {
		if (e.msg[0])
			ovl_error_continue(&e, -EINVAL);
		fprintf(stderr, "lamina: %d error%s: the mount would fail\n",
			e.count, e.count == 1 ? "" : "s");
		rc = EXIT_CHECK_ERROR;
	} else {
		rc = check_report(fs, e.count);
	}
	ovl_fs_teardown(fs);
	free(fs);
	return rc;
}
