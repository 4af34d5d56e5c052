// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The command line of lamina commit and lamina squash, and the new
 * layer directory they create next to a staging directory of their own.
 */
#include "layer_cmd.h"
#include "cli.h"
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int layer_cmd_parse(int argc, char **argv, const char *cmd, const char *usage,
		    bool lowers_only, struct layer_cmd_args *a)
{
	static const struct option longopts[] = {
	    {"bottom", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ovl_error e = {{0}};
	int c;

	optind = 1;
	opterr = 0;
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		}
		if (c == ':') {
			fprintf(
			    stderr,
			    "lamina: %s: option '%s' requires an argument; usage: %s\n",
			    cmd, argv[optind - 1], usage);
			return EXIT_USAGE;
		}
		if (c == 'b' && lowers_only) {
			a->bottom = true;
			continue;
		}
		if (c != 'o') {
			fprintf(stderr,
				"lamina: %s: invalid option '%s'; usage: %s\n",
				cmd, argv[optind - 1], usage);
			return EXIT_USAGE;
		}
		if (ovl_parse_options(&a->cfg, optarg, &e)) {
			fprintf(stderr, "lamina: %s: %s\n", cmd, e.msg);
			return EXIT_USAGE;
		}
	}
	/* Before the checks between options, whose advice for an upper
	 * layer does not apply here. */
	if (lowers_only && a->cfg.upperdir) {
		fprintf(
		    stderr,
		    "lamina: %s: upperdir %s given; %s merges lower layers only, so give lowerdir alone (commit the upper first with lamina commit)\n",
		    cmd, a->cfg.upperdir, cmd);
		return EXIT_USAGE;
	}
	if (ovl_config_finish(&a->cfg, &e)) {
		fprintf(stderr, "lamina: %s: %s\n", cmd, e.msg);
		return EXIT_USAGE;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "lamina: %s: %s; usage: %s\n", cmd,
			optind == argc ? "NEWLAYER is missing"
				       : "too many arguments",
			usage);
		return EXIT_USAGE;
	}
	a->newlayer = argv[optind];
	return 0;
}

/* Split arg into its parent and last component, dropping trailing
 * slashes. name has room for NAME_MAX bytes and the terminator. */
static int split_path(const char *arg, char *parent, size_t size, char *name)
{
	char copy[PATH_MAX];
	size_t len = strlen(arg);
	const char *last;
	char *slash;

	if (len == 0 || len >= sizeof(copy))
		return -EINVAL;
	memcpy(copy, arg, len + 1);
	while (len > 1 && copy[len - 1] == '/')
		copy[--len] = '\0';
	slash = strrchr(copy, '/');
	last = slash ? slash + 1 : copy;
	if (strlen(last) > NAME_MAX)
		return -EINVAL;
	memcpy(name, last, strlen(last) + 1);
	if (!slash)
		snprintf(parent, size, ".");
	else if (slash == copy)
		snprintf(parent, size, "/");
	else {
		*slash = '\0';
		snprintf(parent, size, "%s", copy);
	}
	if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	return 0;
}

int new_layer_open(struct new_layer *nl, const char *arg, const char *cmd)
{
	char parent[PATH_MAX], real[PATH_MAX];

	nl->parent_fd = -1;
	nl->staging_fd = -1;
	if (split_path(arg, parent, sizeof(parent), nl->name)) {
		fprintf(
		    stderr,
		    "lamina: %s: invalid NEWLAYER '%s'; give the path of a directory to create, such as /srv/layers/new\n",
		    cmd, arg);
		return EXIT_USAGE;
	}
	if (!realpath(parent, real)) {
		fprintf(
		    stderr,
		    "lamina: %s: the parent directory %s of NEWLAYER: %s; create it first\n",
		    cmd, parent, strerror(errno));
		return EXIT_USAGE;
	}
	if (snprintf(nl->path, sizeof(nl->path), "%s/%s",
		     strcmp(real, "/") ? real : "",
		     nl->name) >= (int)sizeof(nl->path)) {
		fprintf(stderr, "lamina: %s: NEWLAYER '%s' is too long\n", cmd,
			arg);
		return EXIT_USAGE;
	}
	snprintf(nl->staging, sizeof(nl->staging), ".%.*s.lamina-%s",
		 NAME_MAX - 20, nl->name, cmd);
	if (snprintf(nl->staging_path, sizeof(nl->staging_path), "%s/%s",
		     strcmp(real, "/") ? real : "",
		     nl->staging) >= (int)sizeof(nl->staging_path)) {
		fprintf(stderr, "lamina: %s: NEWLAYER '%s' is too long\n", cmd,
			arg);
		return EXIT_USAGE;
	}
	nl->parent_fd =
	    open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nl->parent_fd < 0) {
		fprintf(stderr, "lamina: %s: cannot open %s: %s\n", cmd, real,
			strerror(errno));
		return EXIT_USAGE;
	}
	return 0;
}

void new_layer_close(struct new_layer *nl)
{
	if (nl->parent_fd >= 0)
		close(nl->parent_fd);
	nl->parent_fd = -1;
	if (nl->staging_fd >= 0)
		close(nl->staging_fd); /* drops the lock */
	nl->staging_fd = -1;
}

/* Take the lock on fd, an open staging directory, without waiting. */
static int lock_staging_fd(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

/* Whether fd is still the directory that the staging name refers to. */
static bool is_staging(const struct new_layer *nl, int fd)
{
	struct stat held, named;

	return fstat(fd, &held) == 0 &&
	       fstatat(nl->parent_fd, nl->staging, &named,
		       AT_SYMLINK_NOFOLLOW) == 0 &&
	       held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

static void keep_staging_fd(struct new_layer *nl, int fd)
{
	if (nl->staging_fd >= 0)
		close(nl->staging_fd);
	nl->staging_fd = fd;
}

int new_layer_lock_staging(struct new_layer *nl)
{
	int tries, fd, err;

	/* A run that held the lock may have removed or renamed the
	 * directory before it let go, so the name is looked up again. */
	for (tries = 0; tries < 10; tries++) {
		fd = openat(nl->parent_fd, nl->staging,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return errno == ENOENT ? 0 : -errno;
		err = lock_staging_fd(fd);
		if (!err && is_staging(nl, fd)) {
			keep_staging_fd(nl, fd);
			return 1;
		}
		close(fd);
		if (err)
			return err;
	}
	return -EBUSY;
}

int new_layer_make_staging(struct new_layer *nl)
{
	int fd, err;

	if (mkdirat(nl->parent_fd, nl->staging, 0700) < 0)
		return errno == EEXIST ? -EBUSY : -errno;
	fd = openat(nl->parent_fd, nl->staging,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Another run may have found the new directory and locked it first;
	 * that run goes on and this one stops. */
	err = lock_staging_fd(fd);
	if (err) {
		close(fd);
		return err;
	}
	keep_staging_fd(nl, fd);
	return 0;
}

int layer_cmd_check_apart(const struct new_layer *nl, const char *dir,
			  const char *what)
{
	char real[PATH_MAX];

	if (!realpath(dir, real)) {
		fprintf(stderr, "lamina: %s %s: %s; check the path\n", what,
			dir, strerror(errno));
		return EXIT_USAGE;
	}
	if (ovl_path_within(nl->path, real)) {
		fprintf(
		    stderr,
		    "lamina: NEWLAYER %s is inside %s %s; put the new layer outside every layer and the workdir\n",
		    nl->path, what, real);
		return EXIT_USAGE;
	}
	return 0;
}

/* The real path of a layer directory, malloc-ed, or NULL after printing
 * why. */
static char *resolve_layer(const char *cmd, const char *key, const char *path)
{
	char *real = realpath(path, NULL);

	if (!real)
		fprintf(stderr, "lamina: %s: %s %s: %s; check the path\n", cmd,
			key, path, strerror(errno));
	return real;
}

int layer_cmd_check_layers(const struct ovl_config *cfg, const char *cmd)
{
	char **lowers = calloc((size_t)cfg->nlower + 1, sizeof(*lowers));
	char *upper = NULL, *work = NULL;
	struct ovl_error e = {{0}};
	int i, rc = 0;

	if (!lowers) {
		fprintf(stderr, "lamina: %s: %s\n", cmd, strerror(ENOMEM));
		return EXIT_USAGE;
	}
	for (i = 0; !rc && i < cfg->nlower; i++) {
		lowers[i] = resolve_layer(cmd, "lowerdir", cfg->lowerdirs[i]);
		if (!lowers[i])
			rc = EXIT_USAGE;
	}
	if (!rc && cfg->upperdir) {
		upper = resolve_layer(cmd, "upperdir", cfg->upperdir);
		if (!upper)
			rc = EXIT_USAGE;
	}
	if (!rc && cfg->workdir) {
		work = resolve_layer(cmd, "workdir", cfg->workdir);
		if (!work)
			rc = EXIT_USAGE;
	}
	if (!rc &&
	    (ovl_check_lowers_distinct((const char *const *)lowers, cfg->nlower,
				       &e) ||
	     ovl_check_layers_apart(upper, work, (const char *const *)lowers,
				    cfg->nlower, &e))) {
		fprintf(stderr, "lamina: %s: %s\n", cmd, e.msg);
		rc = EXIT_USAGE;
	}
	for (i = 0; i < cfg->nlower; i++)
		free(lowers[i]);
	free(lowers);
	free(upper);
	free(work);
	return rc;
}

int layer_cmd_fsync_dir(int dirfd, const char *name)
{
	int fd = openat(dirfd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

void layer_cmd_print_lowerdir(const char *top, const struct ovl_config *cfg)
{
	int i;

	fputs("lowerdir=", stdout);
	option_path(stdout, top);
	for (i = 0; i < cfg->nlower; i++) {
		putchar(':');
		option_path(stdout, cfg->lowerdirs[i]);
	}
	putchar('\n');
}
