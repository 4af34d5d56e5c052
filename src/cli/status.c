// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina status [--json] [MERGED]: the overlay mounts (lamina's and the
 * kernel's), each with its layers, what its upper contains and the features
 * in effect.
 */
#include "cli.h"
#include "stack.h"
#include "layer/layer.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Usage of an upper directory; the root is not counted. */
struct usage {
	uint64_t bytes;	     /* apparent size of files and symlinks */
	uint64_t disk_bytes; /* allocated blocks, as du counts them */
	uint64_t files;	     /* entries that are neither directories nor
			      * whiteouts */
	uint64_t dirs;
	uint64_t whiteouts;
	uint64_t opaque;
	uint64_t redirects;
	uint64_t inodes; /* hard links count once */
	ino_t *linked;	 /* inode numbers of names with st_nlink > 1 */
	size_t nlinked, cap;
};

static int usage_note_link(struct usage *u, ino_t ino)
{
	ino_t *grown;

	if (u->nlinked == u->cap) {
		u->cap = u->cap ? u->cap * 2 : 64;
		grown = realloc(u->linked, u->cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		u->linked = grown;
	}
	u->linked[u->nlinked++] = ino;
	return 0;
}

static int usage_visit(void *arg, const struct layer_entry *e,
		       enum layer_visit visit)
{
	struct usage *u = arg;

	if (visit == LAYER_VISIT_DIR_END || e->depth == 0)
		return 0;
	u->disk_bytes += (uint64_t)e->st.st_blocks * 512;
	if (e->redirect)
		u->redirects++;
	if (visit == LAYER_VISIT_DIR) {
		u->dirs++;
		u->inodes++;
		u->opaque += e->opaque;
		return 0;
	}
	if (e->whiteout)
		u->whiteouts++;
	else
		u->files++;
	if (S_ISREG(e->st.st_mode) || S_ISLNK(e->st.st_mode))
		u->bytes += (uint64_t)e->st.st_size;
	if (e->st.st_nlink > 1)
		return usage_note_link(u, e->st.st_ino);
	u->inodes++;
	return 0;
}

static int ino_cmp(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;

	return x < y ? -1 : x > y;
}

static int usage_measure(const char *upper, bool userxattr, struct usage *u)
{
	struct layer_format fmt = {userxattr ? "user.overlay."
					     : "trusted.overlay."};
	int fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err;
	size_t i;

	if (fd < 0)
		return -errno;
	err = layer_walk(fd, &fmt, usage_visit, u);
	close(fd);
	if (u->nlinked)
		qsort(u->linked, u->nlinked, sizeof(*u->linked), ino_cmp);
	for (i = 0; i < u->nlinked; i++)
		if (i == 0 || u->linked[i] != u->linked[i - 1])
			u->inodes++;
	free(u->linked);
	u->linked = NULL;
	return err;
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

/* Print ", N things" with the singular noun when N is 1. */
static void print_count(const char *sep, uint64_t n, const char *one,
			const char *many)
{
	printf("%s%llu %s", sep, (unsigned long long)n, n == 1 ? one : many);
}

static void print_usage(const struct usage *u)
{
	print_count("  upper holds: ", u->bytes, "byte", "bytes");
	printf(" (%llu on disk)", (unsigned long long)u->disk_bytes);
	print_count(", ", u->files, "file", "files");
	print_count(", ", u->dirs, "directory", "directories");
	print_count(", ", u->whiteouts, "whiteout", "whiteouts");
	print_count(", ", u->opaque, "opaque directory", "opaque directories");
	print_count(", ", u->redirects, "redirect", "redirects");
	print_count(", ", u->inodes, "inode", "inodes");
	putchar('\n');
}

static void print_text(const struct cli_stack *s, const struct usage *u)
{
	char label[32];
	int i;

	text_path(stdout, s->mountpoint);
	if (s->pid)
		printf(" (%s, daemon pid %d)\n", s->fstype, (int)s->pid);
	else
		printf(" (%s)\n", s->fstype);
	printf("  upper:    ");
	text_path(stdout, s->upper ? s->upper : "none (read-only)");
	if (s->work) {
		printf("\n  work:     ");
		text_path(stdout, s->work);
	}
	for (i = 0; i < s->nlower; i++) {
		snprintf(label, sizeof(label), "lower %d:", i + 1);
		printf("\n  %-9s ", label);
		text_path(stdout, s->lowers[i]);
	}
	putchar('\n');
	if (u)
		print_usage(u);
	printf(
	    "  features: redirect_dir=%s xino=%s userxattr=%s volatile=%s passthrough=%s io_uring=%s prefetch=%s index=%s metacopy=%s read-only=%s\n",
	    s->redirect_dir, s->xino, yes_no(s->userxattr),
	    yes_no(s->volatile_mount), yes_no(s->passthrough),
	    yes_no(s->io_uring), yes_no(s->prefetch), yes_no(s->index),
	    yes_no(s->metacopy), yes_no(s->read_only));
}

static void json_field(const char *key, const char *value, bool comma)
{
	printf("%s", comma ? ", " : "");
	json_string(stdout, key);
	printf(": ");
	if (value)
		json_string(stdout, value);
	else
		printf("null");
}

static void print_json_usage(const struct usage *u)
{
	if (!u) {
		printf("null");
		return;
	}
	printf(
	    "{\"bytes\": %llu, \"disk_bytes\": %llu, \"files\": %llu, \"directories\": %llu, \"whiteouts\": %llu, \"opaque_directories\": %llu, \"redirects\": %llu, \"inodes\": %llu}",
	    (unsigned long long)u->bytes, (unsigned long long)u->disk_bytes,
	    (unsigned long long)u->files, (unsigned long long)u->dirs,
	    (unsigned long long)u->whiteouts, (unsigned long long)u->opaque,
	    (unsigned long long)u->redirects, (unsigned long long)u->inodes);
}

static void print_json(const struct cli_stack *s, const struct usage *u)
{
	int i;

	printf("{");
	json_field("mountpoint", s->mountpoint, false);
	json_field("type", s->fstype, true);
	if (s->pid)
		printf(", \"pid\": %d", (int)s->pid);
	else
		printf(", \"pid\": null");
	json_field("upper", s->upper, true);
	json_field("work", s->work, true);
	printf(", \"lowers\": [");
	for (i = 0; i < s->nlower; i++) {
		printf("%s", i ? ", " : "");
		json_string(stdout, s->lowers[i]);
	}
	printf("], \"upper_usage\": ");
	print_json_usage(u);
	printf(", \"features\": {");
	json_field("redirect_dir", s->redirect_dir, false);
	json_field("xino", s->xino, true);
	printf(
	    ", \"userxattr\": %s, \"volatile\": %s, \"passthrough\": %s, \"io_uring\": %s, \"prefetch\": %s, \"index\": %s, \"metacopy\": %s, \"read_only\": %s}}",
	    s->userxattr ? "true" : "false",
	    s->volatile_mount ? "true" : "false",
	    s->passthrough ? "true" : "false", s->io_uring ? "true" : "false",
	    s->prefetch ? "true" : "false", s->index ? "true" : "false",
	    s->metacopy ? "true" : "false", s->read_only ? "true" : "false");
}

/* Print one mount; 0, or EXIT_USAGE after a message on stderr. */
static int status_one(const struct cli_mount *m, bool json, size_t *shown)
{
	struct cli_stack s;
	struct usage u = {0};
	char err[1200];
	int rc, walk = 0;

	if (cli_stack_from_mount(m, &s, err, sizeof(err))) {
		fprintf(stderr, "lamina: status: %s\n", err);
		return EXIT_USAGE;
	}
	if (s.upper)
		walk = usage_measure(s.upper, s.userxattr, &u);
	if (walk)
		fprintf(
		    stderr,
		    "lamina: status: reading the upper directory %s failed: %s\n",
		    s.upper, strerror(-walk));
	rc = walk ? EXIT_USAGE : 0;
	if (json) {
		printf("%s", *shown ? ",\n  " : "\n  ");
		print_json(&s, s.upper && !walk ? &u : NULL);
	} else {
		printf("%s", *shown ? "\n" : "");
		print_text(&s, s.upper && !walk ? &u : NULL);
	}
	(*shown)++;
	cli_stack_free(&s);
	return rc;
}

static int status_parse(int argc, char **argv, bool *json, const char **merged)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		}
		if (c != 'j') {
			fprintf(
			    stderr,
			    "lamina: status: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
		*json = true;
	}
	if (optind < argc - 1) {
		fputs(
		    "lamina: status: give at most one mount point; usage: lamina status [--json] [MERGED]\n",
		    stderr);
		return EXIT_USAGE;
	}
	*merged = optind < argc ? argv[optind] : NULL;
	return 0;
}

/* The mounts to show: all, or the one at merged. */
static int status_select(const char *merged, struct cli_mount *mounts,
			 size_t count, size_t *first, size_t *end)
{
	char real[PATH_MAX];
	const struct cli_mount *m;

	*first = 0;
	*end = count;
	if (!merged)
		return 0;
	if (!realpath(merged, real)) {
		fprintf(
		    stderr,
		    "lamina: status: %s: %s; give the mount point of a lamina or overlay mount\n",
		    merged, strerror(errno));
		return EXIT_USAGE;
	}
	m = cli_mounts_find(mounts, count, real);
	if (!m) {
		fprintf(
		    stderr,
		    "lamina: status: %s is not a lamina or overlay mount; run lamina status to list them\n",
		    real);
		return EXIT_USAGE;
	}
	*first = (size_t)(m - mounts);
	*end = *first + 1;
	return 0;
}

int cmd_status(int argc, char **argv)
{
	struct cli_mount *mounts;
	const char *merged;
	size_t count, i, first, end, shown = 0;
	bool json = false;
	int rc = status_parse(argc, argv, &json, &merged), err;

	if (rc)
		return rc;
	err = cli_mounts_read(&mounts, &count);
	if (err) {
		fprintf(
		    stderr,
		    "lamina: status: reading /proc/self/mountinfo failed: %s\n",
		    strerror(-err));
		return EXIT_USAGE;
	}
	rc = status_select(merged, mounts, count, &first, &end);
	if (!rc && json)
		printf("{\"mounts\": [");
	/* A mount that cannot be shown does not hide the others. */
	for (i = first; !rc && i < end; i++)
		err |= status_one(&mounts[i], json, &shown);
	if (!rc && json)
		printf("%s]}\n", shown ? "\n" : "");
	else if (!rc && first == end)
		printf("no lamina or overlay mounts\n");
	cli_mounts_free(mounts, count);
	return rc || err ? EXIT_USAGE : 0;
}
