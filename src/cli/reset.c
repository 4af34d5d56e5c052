// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina reset [--remount] MERGED|UPPERDIR [-o workdir=DIR]: a factory
 * reset. The upper directory is swapped for an empty one at once, the
 * workdir's state is cleared, and the old tree is deleted afterwards, so
 * the time the stack is unavailable does not grow with the upper's size.
 * A live mount is refused unless --remount is given; then a lamina mount
 * is unmounted, reset and mounted again with the same options.
 */
#include "cli.h"
#include "common/fdlimit.h"
#include "ovl/ovl.h"
#include "reset.h"
#include "stack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct reset_args {
	bool remount;
	const char *target;
	char *workdir; /* from -o workdir=DIR, unescaped and malloc-ed */
};

/* A directory given by path: its parent, open, and its last name. */
struct reset_place {
	int parentfd;
	char name[256];
	char *path;
};

static int place_open(const char *path, struct reset_place *pl)
{
	char *copy = strdup(path), *slash, *name;
	struct stat st;

	if (!copy)
		return -ENOMEM;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	name = slash ? slash + 1 : copy;
	if (!*name || !strcmp(name, ".") || !strcmp(name, "..") ||
	    strlen(name) >= sizeof(pl->name)) {
		free(copy);
		return -EINVAL;
	}
	snprintf(pl->name, sizeof(pl->name), "%s", name);
	if (slash)
		slash[slash == copy] = '\0'; /* keep "/" as the parent */
	pl->parentfd =
	    open(slash ? copy : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (pl->parentfd < 0)
		return -errno;
	pl->path = strdup(path);
	if (fstatat(pl->parentfd, pl->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static void place_close(struct reset_place *pl)
{
	if (pl->parentfd >= 0)
		close(pl->parentfd);
	pl->parentfd = -1;
	free(pl->path);
	pl->path = NULL;
}

static int place_error(const char *what, const char *path, int err)
{
	if (err == -ELOOP)
		fprintf(
		    stderr,
		    "lamina: reset: %s %s is a symbolic link; give the directory it points to\n",
		    what, path);
	else if (err == -EINVAL)
		fprintf(
		    stderr,
		    "lamina: reset: %s '%s' does not end in a directory name; give its path, as in /srv/upper\n",
		    what, path);
	else
		fprintf(
		    stderr,
		    "lamina: reset: %s %s: %s; give an existing directory\n",
		    what, path, strerror(-err));
	return EXIT_USAGE;
}

/* The path of aside, which lies beside the upper, in its parent. */
static void aside_path(const struct reset_place *upper, const char *aside,
		       char *buf, size_t size)
{
	size_t len = strlen(upper->path);

	while (len > 1 && upper->path[len - 1] == '/')
		len--;
	while (len > 0 && upper->path[len - 1] != '/')
		len--;
	if (len == 0)
		snprintf(buf, size, "%s", aside);
	else
		snprintf(buf, size, "%.*s%s", (int)len, upper->path, aside);
}

/* The " at PATH" of a failed deletion, or "" when it failed at the top. */
static const char *failed_at(const struct reset_count *count, char *buf,
			     size_t size)
{
	if (!count->failed[0])
		return "";
	snprintf(buf, size, " at %s", count->failed);
	return buf;
}

/* Delete the old upper that an interrupted reset may have left aside. */
static int remove_leftover(struct reset_place *upper, const char *aside)
{
	struct reset_count count = {0};
	struct stat st;
	int err;

	if (fstatat(upper->parentfd, aside, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	printf(
	    "lamina: reset: removing %s, left beside %s by an interrupted reset\n",
	    aside, upper->path);
	err = reset_delete(upper->parentfd, aside, &count, NULL);
	if (err) {
		char path[PATH_MAX], at[PATH_MAX + 8];

		aside_path(upper, aside, path, sizeof(path));
		fprintf(
		    stderr,
		    "lamina: reset: removing %s failed%s: %s; remove it by hand\n",
		    path, failed_at(&count, at, sizeof(at)), strerror(-err));
	}
	return err;
}

/* Check that workdir/name, which reset clears, is missing or a directory.
 * A file or a symlink there would stop the clearing after the upper has
 * been swapped. */
static int check_work_entry(int workfd, const char *workdir, const char *name)
{
	struct stat st;

	if (fstatat(workfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		fprintf(
		    stderr,
		    "lamina: reset: reading %s/%s failed: %s; fix its permissions or remove it\n",
		    workdir, name, strerror(errno));
		return EXIT_USAGE;
	}
	if (S_ISDIR(st.st_mode))
		return 0;
	fprintf(
	    stderr,
	    "lamina: reset: %s/%s is %s, not a directory; remove it, or give a workdir whose %s is a directory or missing\n",
	    workdir, name,
	    S_ISLNK(st.st_mode) ? "a symbolic link" : "another file type",
	    name);
	return EXIT_USAGE;
}

/* Whether overlayfs or lamina makes name in workdir/work: a temporary
 * name starting with '#', or the parent of the volatile marker. */
static bool is_work_name(const char *name)
{
	return name[0] == '#' || !strcmp(name, "incompat");
}

/* Whether name can be in workdir/index: the lowercase hex of a file
 * handle, or a temporary name or whiteout starting with '#'. */
static bool is_index_name(const char *name)
{
	size_t len = strspn(name, "0123456789abcdef");

	return name[0] == '#' || (len > 0 && len % 2 == 0 && !name[len]);
}

/*
 * Reject a workdir whose work or index directory contains a name that no
 * overlay mount makes there. DIR is then likely not a workdir at all, and
 * clearing it would delete someone's files.
 */
static int check_work_names(int workfd, const char *workdir, const char *sub,
			    bool (*expected)(const char *))
{
	int fd = openat(workfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	const char *odd = NULL;
	struct dirent *d;
	DIR *dir;
	int rc = 0;

	if (fd < 0)
		return 0; /* missing, or check_work_entry() reported it */
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return 0;
	}
	while (!odd && (d = readdir(dir)))
		if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..") &&
		    !expected(d->d_name))
			odd = d->d_name;
	if (odd) {
		fprintf(
		    stderr,
		    "lamina: reset: %s/%s contains '%s', a name that overlay mounts do not make there, so %s is likely not the workdir of this upper; give the workdir it was mounted with, or remove the entry by hand\n",
		    workdir, sub, odd, workdir);
		rc = EXIT_USAGE;
	}
	closedir(dir);
	return rc;
}

/* Reject a workdir that reset could not clear, before the upper is
 * touched. */
static int check_workdir(const char *workdir)
{
	struct reset_place work = {.parentfd = -1};
	int err = place_open(workdir, &work), fd, rc;

	if (err) {
		place_close(&work);
		return place_error("workdir", workdir, err);
	}
	fd = openat(work.parentfd, work.name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		place_close(&work);
		return place_error("workdir", workdir, err);
	}
	rc = check_work_entry(fd, workdir, "work");
	if (!rc)
		rc = check_work_entry(fd, workdir, "index");
	if (!rc)
		rc = check_work_names(fd, workdir, "work", is_work_name);
	if (!rc)
		rc = check_work_names(fd, workdir, "index", is_index_name);
	close(fd);
	place_close(&work);
	return rc;
}

/* Reject a workdir that is the upper, lies inside it or contains it, as
 * the mount does. */
static int check_apart(const char *upper, const char *workdir)
{
	char upper_real[PATH_MAX], work_real[PATH_MAX];
	struct stat upper_st, work_st;
	struct ovl_error e = {{0}};

	if (!realpath(upper, upper_real))
		return place_error("upper directory", upper, -errno);
	if (!realpath(workdir, work_real))
		return place_error("workdir", workdir, -errno);
	if (ovl_check_layers_apart(upper_real, work_real, NULL, 0, &e)) {
		fprintf(stderr, "lamina: reset: %s\n", e.msg);
		return EXIT_USAGE;
	}
	if (stat(upper_real, &upper_st) < 0)
		return place_error("upper directory", upper, -errno);
	if (stat(work_real, &work_st) < 0)
		return place_error("workdir", workdir, -errno);
	if (upper_st.st_dev != work_st.st_dev) {
		fprintf(
		    stderr,
		    "lamina: reset: workdir %s and upper directory %s are on different filesystems, so no mount used them together; give the workdir the upper was mounted with\n",
		    workdir, upper);
		return EXIT_USAGE;
	}
	return 0;
}

/* Check the upper and the workdir before anything is changed. */
static int check_layers(const char *upper, const char *workdir)
{
	struct reset_place pl = {.parentfd = -1};
	int err = place_open(upper, &pl);

	place_close(&pl);
	if (err)
		return place_error("upper directory", upper, err);
	if (!workdir)
		return 0;
	if (check_workdir(workdir))
		return EXIT_USAGE;
	return check_apart(upper, workdir);
}

static int clear_workdir(const char *workdir)
{
	struct reset_place work = {.parentfd = -1};
	struct reset_count count = {0};
	int err = place_open(workdir, &work), fd;

	if (err) {
		place_close(&work);
		return place_error("workdir", workdir, err);
	}
	fd = openat(work.parentfd, work.name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	err = fd < 0 ? -errno : reset_workdir(fd, &count);
	if (fd >= 0)
		close(fd);
	place_close(&work);
	if (err) {
		fprintf(stderr,
			"lamina: reset: clearing workdir %s failed at %s: %s\n",
			workdir, count.failed, strerror(-err));
		return EXIT_USAGE;
	}
	printf("lamina: reset: cleared the work and index directories in %s\n",
	       workdir);
	return 0;
}

/* Swap the upper for an empty one and clear the workdir. */
static int reset_layers(struct reset_place *upper, const char *workdir,
			char *aside, size_t size)
{
	int err;

	reset_aside_name(upper->name, aside, size);
	if (remove_leftover(upper, aside))
		return EXIT_USAGE;
	err = reset_swap(upper->parentfd, upper->name, aside);
	if (err) {
		fprintf(
		    stderr,
		    "lamina: reset: replacing %s with an empty directory failed: %s; %s is unchanged\n",
		    upper->path, strerror(-err), upper->path);
		unlinkat(upper->parentfd, aside, AT_REMOVEDIR);
		return EXIT_USAGE;
	}
	printf(
	    "lamina: reset: %s is empty; its old contents moved to %s beside it\n",
	    upper->path, aside);
	if (workdir)
		return clear_workdir(workdir);
	printf(
	    "lamina: reset: no workdir given, so its work and index directories were left as they are; add -o workdir=DIR to clear them\n");
	return 0;
}

/* Delete the old upper, with a progress bar on a terminal. */
static int delete_aside(struct reset_place *upper, const char *aside)
{
	struct reset_count count = {0};
	struct progress *p = progress_start("deleting the old upper", 0);
	int err = reset_delete(upper->parentfd, aside, &count, p);

	progress_end(p);
	if (err) {
		char path[PATH_MAX], at[PATH_MAX + 8];

		aside_path(upper, aside, path, sizeof(path));
		fprintf(
		    stderr,
		    "lamina: reset: deleting the old upper %s failed%s: %s; the next lamina reset of %s removes it\n",
		    path, failed_at(&count, at, sizeof(at)), strerror(-err),
		    upper->path);
		return EXIT_USAGE;
	}
	printf("lamina: reset: deleted %llu %s of the old upper\n",
	       (unsigned long long)count.removed,
	       count.removed == 1 ? "entry" : "entries");
	return 0;
}

/* Mount again in a child, whose lamina mount returns once it is ready. */
static int mount_again(const struct cli_stack *s)
{
	struct mount_args args = {.mountpoint = s->mountpoint};
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		args.options = strdup(s->options);
		_exit(args.options ? cmd_mount(&args) : EXIT_USAGE);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		fprintf(
		    stderr,
		    "lamina: reset: mounting %s again failed; the upper is reset, mount it with: lamina mount -o '%s' %s\n",
		    s->mountpoint, s->options, s->mountpoint);
		return EXIT_USAGE;
	}
	printf("lamina: reset: mounted %s again with its previous options\n",
	       s->mountpoint);
	return 0;
}

static int reset_upper(const char *path, const char *workdir,
		       const struct cli_stack *remount)
{
	struct reset_place upper = {.parentfd = -1};
	char aside[300], why[PATH_MAX + 64];
	int rc, err;

	if (check_layers(path, workdir))
		return EXIT_USAGE;
	err = place_open(path, &upper);
	if (err) {
		place_close(&upper);
		return place_error("upper directory", path, err);
	}
	/* The swap makes and renames entries beside the upper. */
	if (faccessat(upper.parentfd, ".", W_OK, AT_EACCESS) < 0) {
		fprintf(
		    stderr,
		    "lamina: reset: cannot write in the directory that contains %s: %s; reset swaps the upper there, so run it as a user who may write there\n",
		    path, strerror(errno));
		place_close(&upper);
		return EXIT_USAGE;
	}
	err = cli_upper_in_use(path, why, sizeof(why));
	if (err) {
		if (err == CLI_UPPER_COMMITTING)
			fprintf(stderr,
				"lamina: reset: %s; wait for it to end\n", why);
		else if (err > 0)
			fprintf(
			    stderr,
			    "lamina: reset: %s; unmount it first, or add --remount for a lamina mount\n",
			    why);
		else
			place_error("upper directory", path, err);
		place_close(&upper);
		return EXIT_USAGE;
	}
	rc = reset_layers(&upper, workdir, aside, sizeof(aside));
	if (remount && rc != 0)
		fprintf(
		    stderr,
		    "lamina: reset: %s stays unmounted; mount it with: lamina mount -o '%s' %s\n",
		    remount->mountpoint, remount->options, remount->mountpoint);
	else if (remount)
		rc = mount_again(remount);
	/* The old tree goes last: the stack is back before it is deleted. */
	if (faccessat(upper.parentfd, aside, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		rc |= delete_aside(&upper, aside);
	place_close(&upper);
	return rc ? EXIT_USAGE : 0;
}

/* Unmount a lamina mount as lamina umount does, waiting for the daemon. */
static int unmount_lamina(const char *mountpoint)
{
	char *argv[] = {"umount", (char *)mountpoint, NULL};

	if (cmd_umount(2, argv))
		return EXIT_USAGE;
	printf("lamina: reset: unmounted %s\n", mountpoint);
	return 0;
}

/* Print the steps that reset a kernel overlay mount, whose options
 * --remount cannot reuse. */
static void print_kernel_steps(const char *mountpoint,
			       const struct cli_stack *s)
{
	fprintf(
	    stderr,
	    "lamina: reset: --remount works on lamina mounts only; unmount the overlay mount on %s, run lamina reset %s -o 'workdir=",
	    mountpoint, s->upper);
	if (s->work)
		option_path(stderr, s->work);
	else
		fputs("DIR", stderr);
	fputs("', and mount it again\n", stderr);
}

/* Reset the upper of the mount m. */
static int reset_mount(const struct cli_mount *m, const struct reset_args *a)
{
	struct cli_stack s;
	char err[1200];
	int rc = EXIT_USAGE;

	if (cli_stack_from_mount(m, &s, err, sizeof(err))) {
		fprintf(stderr, "lamina: reset: %s\n", err);
		return rc;
	}
	if (!s.upper)
		fprintf(
		    stderr,
		    "lamina: reset: %s has no upper directory, so there is nothing to reset\n",
		    m->mountpoint);
	else if (!a->remount)
		fprintf(
		    stderr,
		    "lamina: reset: %s is mounted; unmount it first, or add --remount to unmount, reset and mount it again\n",
		    m->mountpoint);
	else if (strcmp(m->fstype, "fuse.lamina"))
		print_kernel_steps(m->mountpoint, &s);
	else if (!check_layers(s.upper, a->workdir ? a->workdir : s.work) &&
		 !unmount_lamina(m->mountpoint))
		rc = reset_upper(s.upper, a->workdir ? a->workdir : s.work, &s);
	cli_stack_free(&s);
	return rc;
}

/* The lamina mount whose upper is upper, for --remount with UPPERDIR. */
static const struct cli_mount *
mount_of_upper(const char *upper, const struct cli_mount *mounts, size_t count)
{
	struct cli_stack s;
	char real[PATH_MAX], err[1200];
	size_t i;
	bool same;

	if (!realpath(upper, real))
		return NULL;
	for (i = 0; i < count; i++) {
		if (strcmp(mounts[i].fstype, "fuse.lamina") ||
		    cli_stack_from_mount(&mounts[i], &s, err, sizeof(err)))
			continue;
		same = s.upper && !strcmp(s.upper, real);
		cli_stack_free(&s);
		if (same)
			return &mounts[i];
	}
	return NULL;
}

/* Take the workdir from one -o argument, in the syntax of the mount
 * options: items separated by commas, where a backslash escapes a comma
 * or a backslash. Returns 0 or EXIT_USAGE after printing why. */
static int parse_options(const char *options, struct reset_args *a)
{
	char *copy = strdup(options), *item, *next;
	int rc = 0;

	if (!copy) {
		fprintf(stderr, "lamina: reset: %s\n", strerror(ENOMEM));
		return EXIT_USAGE;
	}
	for (item = copy; item && !rc; item = next) {
		next = ovl_split_unescaped(item, ',');
		if (!*item)
			continue;
		if (strncmp(item, "workdir=", 8) || !item[8] || a->workdir) {
			fprintf(
			    stderr,
			    "lamina: reset: invalid option '%s' in '-o %s'; reset takes only -o workdir=DIR, once, with each comma in DIR escaped as \\,\n",
			    item, options);
			rc = EXIT_USAGE;
			continue;
		}
		ovl_unescape(item + 8);
		a->workdir = strdup(item + 8);
		if (!a->workdir) {
			fprintf(stderr, "lamina: reset: %s\n",
				strerror(ENOMEM));
			rc = EXIT_USAGE;
		}
	}
	free(copy);
	return rc;
}

static int reset_parse(int argc, char **argv, struct reset_args *a)
{
	static const struct option longopts[] = {
	    {"remount", no_argument, NULL, 'r'},
	    {"options", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	opterr = 0;
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		} else if (c == ':') {
			return cli_missing_argument("reset", argv[optind - 1]);
		} else if (c == 'r') {
			a->remount = true;
		} else if (c == 'o') {
			if (parse_options(optarg, a))
				return EXIT_USAGE;
		} else {
			fprintf(
			    stderr,
			    "lamina: reset: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(
		    "lamina: reset: usage: lamina reset [--remount] MERGED|UPPERDIR [-o workdir=DIR]\n",
		    stderr);
		return EXIT_USAGE;
	}
	a->target = argv[optind];
	return 0;
}

int cmd_reset(int argc, char **argv)
{
	struct reset_args a = {0};
	struct cli_mount *mounts = NULL;
	const struct cli_mount *m = NULL;
	char real[PATH_MAX];
	struct stat st;
	size_t count = 0;
	int rc = reset_parse(argc, argv, &a), err;

	if (rc) {
		free(a.workdir);
		return rc;
	}
	err = cli_mounts_read(&mounts, &count);
	if (err) {
		fprintf(
		    stderr,
		    "lamina: reset: reading /proc/self/mountinfo failed: %s\n",
		    strerror(-err));
		free(a.workdir);
		return EXIT_USAGE;
	}
	if (lstat(a.target, &st) == 0 && S_ISLNK(st.st_mode)) {
		cli_mounts_free(mounts, count);
		free(a.workdir);
		return place_error("upper directory", a.target, -ELOOP);
	}
	if (realpath(a.target, real))
		m = cli_mounts_find(mounts, count, real);
	if (!m && a.remount)
		m = mount_of_upper(a.target, mounts, count);
	if (!m && a.remount) {
		fprintf(
		    stderr,
		    "lamina: reset: --remount needs a mount point or the upper directory of a mount, and %s is neither; to reset an upper directory that is not mounted, leave out --remount\n",
		    a.target);
		cli_mounts_free(mounts, count);
		free(a.workdir);
		return EXIT_USAGE;
	}
	/* Deleting the old tree keeps a descriptor per level. */
	fdlimit_raise(NULL);
	rc = m ? reset_mount(m, &a) : reset_upper(a.target, a.workdir, NULL);
	cli_mounts_free(mounts, count);
	free(a.workdir);
	return rc;
}
