// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina export: one layer directory as an OCI image layer tar, plain or
 * compressed, on standard output or in a file. A file is written under a
 * temporary name and renamed when complete, so a failed export leaves no
 * partial tar behind.
 */
#include "cli.h"
#include "common/fdlimit.h"
#include "layer/layer.h"
#include "layer/oci.h"
#include "ovl/ovl.h"

#include <archive.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum export_filter { EXPORT_PLAIN, EXPORT_GZIP, EXPORT_ZSTD };

struct export_args {
	const char *layer;
	const char *file; /* NULL: standard output */
	enum export_filter filter;
	struct ovl_config cfg; /* lowerdir= and userxattr from -o */
};

/* The output: the descriptor, and the temporary name to rename. */
struct export_out {
	int fd;
	char tmp[PATH_MAX]; /* "" when writing in place */
};

static int export_usage_error(const char *what)
{
	fprintf(
	    stderr,
	    "lamina: %s; usage: lamina export [--gzip|--zstd] [-o lowerdir=DIRS,userxattr] LAYERDIR [FILE|-]\n",
	    what);
	return EXIT_USAGE;
}

static int export_parse(int argc, char **argv, struct export_args *args)
{
	static const struct option longopts[] = {
	    {"gzip", no_argument, NULL, 'z'},
	    {"zstd", no_argument, NULL, 'Z'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	struct ovl_error e = {{0}};
	int c;

	optind = 1;
	opterr = 0;
	/* The ':' after '+' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, "+:o:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		} else if (c == ':') {
			return cli_missing_argument("export", argv[optind - 1]);
		} else if (c == 'z' || c == 'Z') {
			if (args->filter != EXPORT_PLAIN)
				return export_usage_error(
				    "--gzip and --zstd exclude each other");
			args->filter = c == 'z' ? EXPORT_GZIP : EXPORT_ZSTD;
		} else if (c == 'o') {
			if (ovl_parse_options(&args->cfg, optarg, &e)) {
				fprintf(stderr, "lamina: %s\n", e.msg);
				return EXIT_USAGE;
			}
		} else {
			fprintf(
			    stderr,
			    "lamina: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (args->cfg.upperdir || args->cfg.workdir)
		return export_usage_error(
		    "export takes only lowerdir= and userxattr in -o, not upperdir= or workdir=");
	if (optind >= argc || argc - optind > 2)
		return export_usage_error(
		    "give one layer directory and at most one output file");
	args->layer = argv[optind];
	if (optind + 1 < argc && strcmp(argv[optind + 1], "-"))
		args->file = argv[optind + 1];
	if (args->file && !args->file[0])
		return export_usage_error(
		    "the output file name is empty; give a file name, or - for standard output");
	return 0;
}

static int open_layer_dir(const char *path, const char *what)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		fprintf(stderr,
			"lamina: %s %s: %s; give an existing directory\n", what,
			path, strerror(errno));
	return fd;
}

/* Reject an output file inside the layer: the tar would contain itself. */
static int check_outside(const char *file, const char *layer)
{
	char dir[PATH_MAX], real_dir[PATH_MAX], real_layer[PATH_MAX];
	char *slash;
	size_t len;

	snprintf(dir, sizeof(dir), "%s", file);
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (!realpath(dir, real_dir) || !realpath(layer, real_layer))
		return 0; /* the open that follows names the problem */
	len = strlen(real_layer);
	if (!strncmp(real_dir, real_layer, len) &&
	    (real_dir[len] == '/' || real_dir[len] == '\0' || len == 1)) {
		fprintf(
		    stderr,
		    "lamina: output file %s is inside the layer %s; write it outside the layer\n",
		    file, layer);
		return EXIT_USAGE;
	}
	return 0;
}

static int open_output(const char *file, struct export_out *out)
{
	struct stat st;
	mode_t mask;

	out->tmp[0] = '\0';
	if (!file) {
		out->fd = STDOUT_FILENO;
	} else if (stat(file, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* A device or pipe is written in place; it cannot be renamed.
		 */
		out->fd = open(file, O_WRONLY | O_CLOEXEC);
	} else {
		snprintf(out->tmp, sizeof(out->tmp), "%s.XXXXXX", file);
		out->fd = mkostemp(out->tmp, O_CLOEXEC);
		mask = umask(0);
		umask(mask);
		if (out->fd >= 0)
			fchmod(out->fd, 0666 & ~mask);
	}
	if (out->fd < 0) {
		fprintf(stderr, "lamina: cannot create output file %s: %s\n",
			file, strerror(errno));
		out->tmp[0] = '\0';
		return EXIT_USAGE;
	}
	if (isatty(out->fd)) {
		fprintf(
		    stderr,
		    "lamina: not writing a tar archive to a terminal; give an output FILE or redirect standard output\n");
		return EXIT_USAGE;
	}
	return 0;
}

static struct archive *export_archive(enum export_filter filter, int fd)
{
	struct archive *a = archive_write_new();
	char why[512];
	int rc;

	if (!a)
		return NULL;
	rc = archive_write_set_format_pax(a);
	/* xattrs only in the SCHILY header that OCI tools and GNU tar read. */
	if (rc == ARCHIVE_OK)
		rc = archive_write_set_format_option(a, "pax", "xattrheader",
						     "SCHILY");
	if (rc == ARCHIVE_OK && filter == EXPORT_GZIP) {
		rc = archive_write_add_filter_gzip(a);
		/* No time in the gzip header: equal trees, equal output. */
		if (rc == ARCHIVE_OK)
			rc = archive_write_set_filter_option(a, "gzip",
							     "timestamp", NULL);
	}
	if (rc == ARCHIVE_OK && filter == EXPORT_ZSTD)
		rc = archive_write_add_filter_zstd(a);
	/* Pad to 512-byte records only, to a file or a pipe alike. */
	if (rc == ARCHIVE_OK)
		rc = archive_write_set_bytes_in_last_block(a, 1);
	if (rc == ARCHIVE_OK)
		rc = archive_write_open_fd(a, fd);
	if (rc != ARCHIVE_OK) {
		fprintf(stderr, "lamina: cannot set up the tar writer: %s\n",
			oci_archive_error(a, why, sizeof(why)));
		archive_write_free(a);
		return NULL;
	}
	return a;
}

/* Open the layer and its lowers; fds[0] is the layer. */
static int export_roots(const struct export_args *args, int *fds)
{
	int i;

	fds[0] = open_layer_dir(args->layer, "layer directory");
	if (fds[0] < 0)
		return EXIT_USAGE;
	for (i = 0; i < args->cfg.nlower; i++) {
		fds[i + 1] =
		    open_layer_dir(args->cfg.lowerdirs[i], "lower directory");
		if (fds[i + 1] < 0)
			return EXIT_USAGE;
	}
	return 0;
}

static void warn_if_in_use(const char *layer)
{
	char why[PATH_MAX + 128];

	if (cli_upper_in_use(layer, why, sizeof(why)) > 0)
		fprintf(
		    stderr,
		    "lamina: warning: %s; files that change during the export may be inconsistent in the tar\n",
		    why);
}

static int export_run(const struct export_args *args, int *fds,
		      struct archive *a)
{
	struct layer_format fmt = {.xattr_prefix = args->cfg.userxattr
						       ? "user.overlay."
						       : "trusted.overlay."};
	struct layer_stack_roots roots = {
	    .fds = fds, .count = args->cfg.nlower + 1, .fmt = &fmt};
	struct oci_export_options opts = {.roots = &roots,
					  .layer_path = args->layer,
					  .lowers_given = args->cfg.nlower > 0};
	struct oci_error e = {{0}};
	char why[512];
	int err = oci_export(a, &opts, &e);

	if (!err && archive_write_close(a) != ARCHIVE_OK) {
		snprintf(e.msg, sizeof(e.msg), "writing the tar failed: %s",
			 oci_archive_error(a, why, sizeof(why)));
		err = -EIO;
	}
	if (!err || err == -EUCLEAN)
		return err ? EXIT_USAGE : 0;
	if (e.msg[0])
		fprintf(stderr, "lamina: export of %s failed: %s\n",
			args->layer, e.msg);
	else if (layer_walk_failure()[0])
		fprintf(stderr, "lamina: export of %s failed at %s: %s\n",
			args->layer, layer_walk_failure(), strerror(-err));
	else
		fprintf(stderr, "lamina: export of %s failed: %s\n",
			args->layer, strerror(-err));
	return EXIT_USAGE;
}

static int export_finish(const struct export_args *args, struct export_out *out,
			 int rc)
{
	if (!rc && out->tmp[0] && rename(out->tmp, args->file) < 0) {
		fprintf(stderr, "lamina: cannot rename %s to %s: %s\n",
			out->tmp, args->file, strerror(errno));
		rc = EXIT_USAGE;
	}
	if (rc && out->tmp[0])
		unlink(out->tmp);
	if (out->fd > STDERR_FILENO)
		close(out->fd);
	return rc;
}

int cmd_export(int argc, char **argv)
{
	struct export_args args = {0};
	struct export_out out = {.fd = -1};
	struct archive *a = NULL;
	int fds[OVL_MAX_LAYERS + 1], i, rc;

	for (i = 0; i <= OVL_MAX_LAYERS; i++)
		fds[i] = -1;
	/* The walk over the layers keeps a descriptor per level. */
	fdlimit_raise(NULL);
	/* Names that are UTF-8 go into pax headers as they are; other bytes
	 * make libarchive mark that one header hdrcharset=BINARY. */
	setlocale(LC_CTYPE, "C.UTF-8");
	rc = export_parse(argc, argv, &args);
	if (!rc)
		rc = export_roots(&args, fds);
	if (!rc && args.file)
		rc = check_outside(args.file, args.layer);
	if (!rc)
		rc = open_output(args.file, &out);
	if (!rc) {
		warn_if_in_use(args.layer);
		a = export_archive(args.filter, out.fd);
		rc = a ? export_run(&args, fds, a) : EXIT_USAGE;
	}
	if (a)
		archive_write_free(a);
	rc = export_finish(&args, &out, rc);
	for (i = 0; i <= OVL_MAX_LAYERS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	ovl_config_free(&args.cfg);
	return rc;
}
