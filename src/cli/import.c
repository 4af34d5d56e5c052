// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina import: an OCI layer tar (plain, gzip or zstd) unpacked into a
 * new layer directory. The tar is unpacked into a staging directory next
 * to the target and renamed onto it at the end, so an interrupted or
 * failed import leaves no half layer under the target's name.
 */
#include "cli.h"
#include "layer/oci.h"
#include "ovl/ovl.h"

#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct import_args {
	const char *file; /* NULL: standard input */
	const char *layer;
	bool userxattr;
};

/* The import target: its open parent, its name and the staging name. */
struct import_target {
	int parentfd;
	char name[NAME_MAX + 1];
	char staging[NAME_MAX + 1];
	char staging_path[PATH_MAX + NAME_MAX + 2]; /* absolute, for cleanup */
	int lockfd;	/* the staging directory, locked while in use */
	bool exists;	/* an empty directory to replace */
	struct stat st; /* its metadata when it exists */
};

static volatile int import_stop;

static void import_on_signal(int sig)
{
	(void)sig;
	import_stop = 1;
}

static int import_usage_error(const char *what)
{
	fprintf(
	    stderr,
	    "lamina: %s; usage: lamina import [--userxattr] [FILE|-] LAYERDIR\n",
	    what);
	return EXIT_USAGE;
}

static int import_parse(int argc, char **argv, struct import_args *args)
{
	static const struct option longopts[] = {
	    {"userxattr", no_argument, NULL, 'u'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		} else if (c == 'u') {
			args->userxattr = true;
		} else {
			fprintf(
			    stderr,
			    "lamina: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 1 || argc - optind > 2)
		return import_usage_error(
		    "give an optional input file and one layer directory");
	if (argc - optind == 2 && strcmp(argv[optind], "-"))
		args->file = argv[optind];
	args->layer = argv[argc - 1];
	return 0;
}

/* Whether the directory fd has no entries; consumes fd. */
static bool dir_is_empty(int fd)
{
	DIR *dir = fdopendir(fd);
	struct dirent *d;
	bool empty = true;

	if (!dir) {
		close(fd);
		return false;
	}
	while (empty && (d = readdir(dir)))
		empty = !strcmp(d->d_name, ".") || !strcmp(d->d_name, "..");
	closedir(dir);
	return empty;
}

/* Split the layer path into an open parent and a name. */
static int target_open_parent(const char *layer, struct import_target *t)
{
	char path[PATH_MAX], *slash;
	const char *base;
	size_t len;

	snprintf(path, sizeof(path), "%s", layer);
	for (len = strlen(path); len > 1 && path[len - 1] == '/'; len--)
		path[len - 1] = '\0';
	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	len = strlen(base);
	if (len == 0 || len > NAME_MAX || !strcmp(base, ".") ||
	    !strcmp(base, "..")) {
		fprintf(
		    stderr,
		    "lamina: invalid layer directory %s; give a path that ends in the new directory's name\n",
		    layer);
		return EXIT_USAGE;
	}
	memcpy(t->name, base, len + 1);
	if (slash == path)
		path[1] = '\0';
	else if (slash)
		*slash = '\0';
	t->parentfd =
	    open(slash ? path : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->parentfd < 0) {
		fprintf(stderr,
			"lamina: parent directory of %s: %s; create it first\n",
			layer, strerror(errno));
		return EXIT_USAGE;
	}
	return 0;
}

static int target_check(const char *layer, struct import_target *t)
{
	char why[PATH_MAX + 128];
	uint64_t parent_mnt, target_mnt;
	int fd, rc;

	if (fstatat(t->parentfd, t->name, &t->st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "lamina: layer directory %s: %s\n", layer,
			strerror(errno));
		return EXIT_USAGE;
	}
	if (S_ISLNK(t->st.st_mode)) {
		fprintf(
		    stderr,
		    "lamina: layer directory %s is a symbolic link; give the path of a directory, not of a link to one\n",
		    layer);
		return EXIT_USAGE;
	}
	fd = openat(t->parentfd, t->name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (!S_ISDIR(t->st.st_mode) || fd < 0 || !dir_is_empty(fd)) {
		fprintf(
		    stderr,
		    "lamina: layer directory %s already exists and is not an empty directory; give a new or empty directory\n",
		    layer);
		return EXIT_USAGE;
	}
	/* The import renames the staging directory over the target. */
	if (cli_mount_id(t->parentfd, "", &parent_mnt) == 0 &&
	    cli_mount_id(t->parentfd, t->name, &target_mnt) == 0 &&
	    parent_mnt != target_mnt) {
		fprintf(
		    stderr,
		    "lamina: layer directory %s is a mount point, which import cannot replace; give a new directory inside it, such as %s/layer\n",
		    layer, layer);
		return EXIT_USAGE;
	}
	rc = cli_upper_in_use(layer, why, sizeof(why));
	if (rc > 0) {
		fprintf(stderr, "lamina: %s; %s before importing into %s\n",
			why,
			rc == CLI_UPPER_COMMITTING ? "wait for it to end"
						   : "unmount it",
			layer);
		return EXIT_USAGE;
	}
	t->exists = true;
	return 0;
}

/* Whether name has the form of the target's staging directories:
 * ".NAME.import-" and six hex digits, as staging_create makes them. */
static bool is_staging_name(const struct import_target *t, const char *name)
{
	char prefix[NAME_MAX + 2];
	int len = snprintf(prefix, sizeof(prefix), ".%.200s.import-", t->name);

	if (strncmp(name, prefix, (size_t)len) || strlen(name + len) != 6)
		return false;
	return strspn(name + len, "0123456789abcdef") == 6;
}

/* Remove the staging directory name if no running import holds its lock.
 * ovl_remove_tree() unlinks symlinks inside without following them. */
static void staging_remove_leftover(const char *layer,
				    const struct import_target *t,
				    const char *name)
{
	struct stat st;
	int fd, err;

	if (fstatat(t->parentfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISDIR(st.st_mode))
		return;
	fd = openat(t->parentfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return;
	}
	fprintf(
	    stderr,
	    "lamina: removing %s next to %s, left by an interrupted import\n",
	    name, layer);
	err = ovl_remove_tree(t->parentfd, name);
	close(fd);
	if (err)
		fprintf(
		    stderr,
		    "lamina: warning: removing %s next to %s failed: %s; remove it by hand\n",
		    name, layer, strerror(-err));
}

/* Remove the staging directories that killed imports of the same target
 * left, since nothing else would. */
static void staging_remove_leftovers(const char *layer,
				     const struct import_target *t)
{
	DIR *dir = ovl_opendir_at(t->parentfd);
	struct dirent *d;

	if (!dir)
		return;
	while ((d = readdir(dir)))
		if (is_staging_name(t, d->d_name))
			staging_remove_leftover(layer, t, d->d_name);
	closedir(dir);
}

/* Create the hidden staging directory next to the target, and lock it
 * so that a concurrent import of the same target leaves it alone. */
static int staging_create(const char *layer, struct import_target *t)
{
	char proc[64], parent[PATH_MAX];
	unsigned int seed = (unsigned int)getpid() ^ (unsigned int)time(NULL);
	ssize_t n;
	int tries;

	for (tries = 0; tries < 100; tries++) {
		snprintf(t->staging, sizeof(t->staging), ".%.200s.import-%06x",
			 t->name, rand_r(&seed) & 0xffffff);
		if (mkdirat(t->parentfd, t->staging, 0700) == 0)
			break;
		if (errno != EEXIST)
			tries = 100;
	}
	if (tries >= 100) {
		fprintf(
		    stderr,
		    "lamina: cannot create a staging directory next to %s: %s\n",
		    layer, strerror(errno));
		t->staging[0] = '\0';
		return EXIT_USAGE;
	}
	t->lockfd = openat(t->parentfd, t->staging,
			   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (t->lockfd >= 0)
		flock(t->lockfd, LOCK_EX);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t->parentfd);
	n = readlink(proc, parent, sizeof(parent) - 1);
	parent[n < 0 ? 0 : n] = '\0';
	snprintf(t->staging_path, sizeof(t->staging_path), "%s/%s", parent,
		 t->staging);
	return 0;
}

/* The root gets the replaced directory's metadata, or the default mode;
 * a "./" entry in the tar overrides both. */
static int staging_root_init(const struct import_target *t, int fd)
{
	mode_t mask = umask(0);

	umask(mask);
	if (!t->exists)
		return fchmod(fd, 0777 & ~mask) < 0 ? -errno : 0;
	if (fchown(fd, t->st.st_uid, t->st.st_gid) < 0 ||
	    fchmod(fd, t->st.st_mode & 07777) < 0)
		return -errno;
	return 0;
}

static int make_writable(const char *path, const struct stat *st, int flag,
			 struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_D && (st->st_mode & 0700) != 0700)
		chmod(path, st->st_mode | 0700);
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void staging_remove(const struct import_target *t)
{
	if (!t->staging[0] || !t->staging_path[0])
		return;
	/* Directories unpacked read-only must be writable to be emptied. */
	nftw(t->staging_path, make_writable, 16, FTW_PHYS);
	nftw(t->staging_path, remove_one, 16, FTW_PHYS | FTW_DEPTH);
}

/* The input, read through this callback: libarchive's own fd reader
 * retries a read that a signal interrupts, and the import would hang. */
struct import_input {
	int fd;
	char buf[64 * 1024];
};

static la_ssize_t import_read(struct archive *a, void *arg, const void **buf)
{
	struct import_input *in = arg;
	ssize_t n;

	do
		n = read(in->fd, in->buf, sizeof(in->buf));
	while (n < 0 && errno == EINTR && !import_stop);
	if (n < 0) {
		archive_set_error(a, errno, "read failed: %s", strerror(errno));
		return -1;
	}
	*buf = in->buf;
	return n;
}

static struct archive *import_reader(const char *file, struct import_input *in,
				     unsigned long long *size)
{
	int *fd = &in->fd;
	struct archive *a;
	struct stat st;

	*fd = file ? open(file, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	if (*fd < 0) {
		fprintf(stderr, "lamina: cannot open input file %s: %s\n", file,
			strerror(errno));
		return NULL;
	}
	if (isatty(*fd)) {
		fprintf(
		    stderr,
		    "lamina: not reading a tar archive from a terminal; give an input FILE or redirect standard input\n");
		return NULL;
	}
	*size = fstat(*fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : 0;
	a = archive_read_new();
	if (!a || archive_read_support_filter_all(a) != ARCHIVE_OK ||
	    archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_open(a, in, NULL, import_read, NULL) != ARCHIVE_OK) {
		fprintf(stderr, "lamina: cannot read %s as a tar archive: %s\n",
			file ? file : "standard input",
			a ? archive_error_string(a) : strerror(ENOMEM));
		if (a)
			archive_read_free(a);
		return NULL;
	}
	return a;
}

static void import_signals(void)
{
	struct sigaction sa = {.sa_handler = import_on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* Unpack into the staging directory and move it into place. */
static int import_into(const struct import_args *args, struct import_target *t,
		       struct archive *a, unsigned long long in_size)
{
	struct oci_import_options opts = {.userxattr = args->userxattr,
					  .stop = &import_stop,
					  .in_size = in_size};
	struct oci_error e = {{0}};
	int fd, err;

	fd = openat(t->parentfd, t->staging,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	err = fd < 0 ? -errno : staging_root_init(t, fd);
	if (!err && fchdir(fd) < 0)
		err = -errno;
	if (!err)
		err = oci_import(a, &opts, &e);
	/* A signal can also surface as a failed read: report the signal. */
	if (import_stop)
		err = -EINTR;
	/* The layer is on disk before its name appears. */
	if (!err && syncfs(fd) < 0)
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (!err &&
	    renameat(t->parentfd, t->staging, t->parentfd, t->name) < 0) {
		fprintf(
		    stderr,
		    "lamina: import into %s failed: cannot rename the staging directory %s onto it: %s\n",
		    args->layer, t->staging_path, strerror(errno));
		return EXIT_USAGE;
	}
	if (!err) {
		fsync(t->parentfd);
		return 0;
	}
	if (err == -EINTR)
		snprintf(e.msg, sizeof(e.msg),
			 "interrupted; nothing was imported");
	fprintf(stderr, "lamina: import into %s failed: %s\n", args->layer,
		e.msg[0] ? e.msg : strerror(-err));
	return EXIT_USAGE;
}

int cmd_import(int argc, char **argv)
{
	struct import_args args = {0};
	struct import_target t = {.parentfd = -1, .lockfd = -1};
	struct import_input *in = malloc(sizeof(*in));
	struct archive *a = NULL;
	unsigned long long in_size = 0;
	int rc;

	if (!in)
		return EXIT_USAGE;
	in->fd = -1;
	rc = import_parse(argc, argv, &args);
	if (!rc)
		rc = target_open_parent(args.layer, &t);
	if (!rc)
		rc = target_check(args.layer, &t);
	if (!rc) {
		a = import_reader(args.file, in, &in_size);
		rc = a ? 0 : EXIT_USAGE;
	}
	if (!rc) {
		import_signals();
		staging_remove_leftovers(args.layer, &t);
		rc = staging_create(args.layer, &t);
	}
	if (!rc)
		rc = import_into(&args, &t, a, in_size);
	if (rc)
		staging_remove(&t);
	if (a)
		archive_read_free(a);
	if (in->fd > STDERR_FILENO)
		close(in->fd);
	free(in);
	if (t.lockfd >= 0)
		close(t.lockfd);
	if (t.parentfd >= 0)
		close(t.parentfd);
	return rc;
}
