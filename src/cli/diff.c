// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina diff [--json] UPPERDIR -o lowerdir=... | MERGED: the changes an
 * upper layer makes to its lower layers, with paths relative to the
 * merged root, in the upper's name order (parents before children):
 *
 *   A  added: no lower entry has the path
 *   C  changed: the upper entry replaces a lower one with other content,
 *      metadata or type. An opaque directory that hides a lower one is
 *      shown as "replaced"
 *   D  deleted: a whiteout that hides a lower entry
 *   R  renamed: a directory with a redirect, from its old path
 */
#include "cli.h"
#include "common/fdlimit.h"
#include "diff.h"
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct change {
	char kind; /* 'A', 'C', 'D' or 'R' */
	bool dir;
	bool replaced; /* an opaque directory over a lower directory */
	char *path;
	char *from; /* R: the old path */
};

struct diff {
	const int *lowerfds;
	int nlower;
	struct layer_format fmt;
	char **lower_of; /* per depth: the directory's lower path, or NULL */
	int depth_cap;
	struct change *changes;
	size_t count, cap;
};

static int diff_add(struct diff *d, char kind, const char *path, bool dir,
		    const char *from)
{
	struct change *grown, *c;

	if (d->count == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 64;
		grown = realloc(d->changes, d->cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		d->changes = grown;
	}
	c = &d->changes[d->count];
	*c = (struct change){.kind = kind, .dir = dir};
	c->path = strdup(path);
	c->from = from ? strdup(from) : NULL;
	if (!c->path || (from && !c->from)) {
		free(c->path);
		free(c->from);
		return -ENOMEM;
	}
	d->count++;
	return 0;
}

static char *path_join(const char *parent, const char *name)
{
	char *s;

	if (asprintf(&s, "%s%s%s", parent, *parent ? "/" : "", name) < 0)
		return NULL;
	return s;
}

/*
 * The lower path a directory of the upper stands for: its redirect, if
 * any (absolute from the root, or a name in the parent's lower path), or
 * its own name below the parent's lower path.
 */
static char *lower_path_of(const struct layer_entry *e, const char *parent)
{
	if (e->redirect && e->redirect[0] == '/')
		return strdup(e->redirect + 1);
	if (!parent)
		return NULL;
	return path_join(parent, e->redirect ? e->redirect : e->name);
}

static int set_lower_of(struct diff *d, int depth, char *path)
{
	char **grown;

	if (depth >= d->depth_cap) {
		grown = realloc(d->lower_of, (depth + 64) * sizeof(*grown));
		if (!grown) {
			free(path);
			return -ENOMEM;
		}
		memset(grown + d->depth_cap, 0,
		       (depth + 64 - d->depth_cap) * sizeof(*grown));
		d->lower_of = grown;
		d->depth_cap = depth + 64;
	}
	free(d->lower_of[depth]);
	d->lower_of[depth] = path;
	return 0;
}

static int diff_dir(struct diff *d, const struct layer_entry *e, char *lower,
		    bool found, const struct lower_hit *hit)
{
	bool lower_dir = found && S_ISDIR(hit->st.st_mode);
	int err;

	if (found && e->redirect)
		err = diff_add(d, 'R', e->path, true, lower);
	else if (!found)
		err = diff_add(d, 'A', e->path, true, NULL);
	else if ((lower_dir && e->opaque) || diff_entry_changed(e, hit))
		err = diff_add(d, 'C', e->path, true, NULL);
	else
		err = 0;
	if (!err && lower_dir && e->opaque && !e->redirect)
		d->changes[d->count - 1].replaced = true;
	/* Below an opaque or a new directory, nothing has a lower entry. */
	if (!lower_dir || e->opaque) {
		free(lower);
		lower = NULL;
	}
	return err ? err : set_lower_of(d, e->depth, lower);
}

static int diff_visit(void *arg, const struct layer_entry *e,
		      enum layer_visit visit)
{
	struct diff *d = arg;
	struct lower_hit hit;
	const char *parent;
	char *lower;
	bool found;
	int err;

	if (visit == LAYER_VISIT_DIR_END)
		return set_lower_of(d, e->depth, NULL);
	if (e->depth == 0)
		return set_lower_of(d, 0, e->opaque ? NULL : strdup(""));
	parent = d->lower_of[e->depth - 1];
	lower = visit == LAYER_VISIT_DIR ? lower_path_of(e, parent)
		: parent		 ? path_join(parent, e->name)
					 : NULL;
	if (parent && !lower)
		return -ENOMEM;
	found = lower &&
		diff_lower_find(d->lowerfds, d->nlower, &d->fmt, lower, &hit);
	if (lower && hit.err) {
		free(lower);
		return hit.err;
	}
	if (visit == LAYER_VISIT_DIR)
		err = diff_dir(d, e, lower, found, &hit);
	else if (e->whiteout)
		err = found ? diff_add(d, 'D', e->path, S_ISDIR(hit.st.st_mode),
				       NULL)
			    : 0;
	else if (!found)
		err = diff_add(d, 'A', e->path, false, NULL);
	else
		err = diff_entry_changed(e, &hit)
			  ? diff_add(d, 'C', e->path, false, NULL)
			  : 0;
	if (visit != LAYER_VISIT_DIR)
		free(lower);
	if (found)
		close(hit.dirfd);
	return err;
}

/* A renamed directory leaves a whiteout at its old path; the R line
 * already shows that the old path is gone, so that D line is dropped. */
static void drop_rename_sources(struct diff *d)
{
	size_t i, j, kept = 0;
	bool source;

	for (i = 0; i < d->count; i++) {
		source = false;
		for (j = 0; d->changes[i].kind == 'D' && j < d->count; j++)
			source |=
			    d->changes[j].kind == 'R' &&
			    !strcmp(d->changes[j].from, d->changes[i].path);
		if (source) {
			free(d->changes[i].path);
			continue;
		}
		d->changes[kept++] = d->changes[i];
	}
	d->count = kept;
}

static const char *change_word(char kind)
{
	switch (kind) {
	case 'A':
		return "added";
	case 'C':
		return "changed";
	case 'D':
		return "deleted";
	default:
		return "renamed";
	}
}

static void print_changes(const struct diff *d, bool json)
{
	const struct change *c;
	size_t i;

	if (json)
		printf("{\"changes\": [");
	for (i = 0; i < d->count; i++) {
		c = &d->changes[i];
		if (json) {
			printf("%s{\"change\": \"%s\", \"path\": ",
			       i ? ",\n  " : "\n  ", change_word(c->kind));
			json_string(stdout, c->path);
			if (c->from) {
				printf(", \"from\": ");
				json_string(stdout, c->from);
			}
			printf(", \"directory\": %s, \"replaced\": %s}",
			       c->dir ? "true" : "false",
			       c->replaced ? "true" : "false");
			continue;
		}
		printf("%c  ", c->kind);
		if (c->from) {
			text_path(stdout, c->from);
			printf("/ -> ");
		}
		text_path(stdout, c->path);
		printf("%s%s\n", c->dir ? "/" : "",
		       c->replaced ? " (replaced)" : "");
	}
	if (json)
		printf("%s]}\n", d->count ? "\n" : "");
}

static void diff_free(struct diff *d)
{
	size_t i;
	int j;

	for (i = 0; i < d->count; i++) {
		free(d->changes[i].path);
		free(d->changes[i].from);
	}
	free(d->changes);
	for (j = 0; j < d->depth_cap; j++)
		free(d->lower_of[j]);
	free(d->lower_of);
}

/* Open the layers of s; on an error, print a message and return 1. */
static int open_layers(const struct cli_stack *s, int *upperfd, int *fds)
{
	const char *what = "upper directory", *path = s->upper;
	int i;

	*upperfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (i = 0; *upperfd >= 0 && i < s->nlower; i++) {
		what = "lower directory";
		path = s->lowers[i];
		fds[i] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fds[i] < 0)
			break;
	}
	if (*upperfd >= 0 && i == s->nlower)
		return 0;
	fprintf(stderr, "lamina: diff: %s %s: %s; give an existing directory\n",
		what, path, strerror(errno));
	while (i-- > 0)
		close(fds[i]);
	if (*upperfd >= 0)
		close(*upperfd);
	return EXIT_USAGE;
}

static int diff_stack(const struct cli_stack *s, bool json)
{
	struct diff d = {.nlower = s->nlower};
	int upperfd, *fds, i;
	int err;

	/* A read-only stack has no upper layer, so nothing changed. */
	if (!s->upper) {
		print_changes(&d, json);
		return 0;
	}
	fds = calloc((size_t)s->nlower + 1, sizeof(int));
	d.fmt.xattr_prefix =
	    s->userxattr ? "user.overlay." : "trusted.overlay.";
	if (!fds || open_layers(s, &upperfd, fds)) {
		free(fds);
		return EXIT_USAGE;
	}
	d.lowerfds = fds;
	err = layer_walk(upperfd, &d.fmt, diff_visit, &d);
	if (err && err != -EUCLEAN && layer_walk_failure()[0])
		fprintf(
		    stderr,
		    "lamina: diff: reading the layers of %s failed at %s: %s\n",
		    s->upper, layer_walk_failure(), strerror(-err));
	else if (err && err != -EUCLEAN)
		fprintf(stderr,
			"lamina: diff: reading the layers of %s failed: %s\n",
			s->upper, strerror(-err));
	else {
		drop_rename_sources(&d);
		print_changes(&d, json);
	}
	diff_free(&d);
	for (i = 0; i < s->nlower; i++)
		close(fds[i]);
	free(fds);
	close(upperfd);
	return err ? EXIT_USAGE : 0;
}

/* The stack of a mount at path, or 1 after a message. */
static int stack_of_mount(const char *path, struct cli_stack *s)
{
	struct cli_mount *mounts;
	const struct cli_mount *m;
	char real[PATH_MAX], err[1200];
	size_t count;
	int rc = EXIT_USAGE;

	if (!realpath(path, real)) {
		fprintf(
		    stderr,
		    "lamina: diff: %s: %s; give a mount point, or an upper directory and -o lowerdir=DIR\n",
		    path, strerror(errno));
		return rc;
	}
	if (cli_mounts_read(&mounts, &count)) {
		fprintf(stderr,
			"lamina: diff: reading /proc/self/mountinfo failed\n");
		return rc;
	}
	m = cli_mounts_find(mounts, count, real);
	if (!m)
		fprintf(
		    stderr,
		    "lamina: diff: %s is not a lamina or overlay mount; to compare an upper directory, add -o lowerdir=DIR[:DIR...]\n",
		    real);
	else if (cli_stack_from_mount(m, s, err, sizeof(err)))
		fprintf(stderr, "lamina: diff: %s\n", err);
	else
		rc = 0;
	cli_mounts_free(mounts, count);
	return rc;
}

/* The stack of UPPERDIR -o OPTIONS, or 1 after a message. */
static int stack_of_options(const char *upper, const char *options,
			    struct cli_stack *s)
{
	char err[1200];

	if (cli_stack_from_options(options, s, err, sizeof(err))) {
		fprintf(stderr, "lamina: diff: %s\n", err);
		return EXIT_USAGE;
	}
	if (upper) {
		free(s->upper);
		s->upper = strdup(upper);
	}
	if (!s->upper) {
		fputs(
		    "lamina: diff: no upper directory given; usage: lamina diff [--json] UPPERDIR -o lowerdir=DIR[:DIR...]\n",
		    stderr);
		return EXIT_USAGE;
	}
	return 0;
}

static int diff_parse(int argc, char **argv, bool *json, char **options)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"options", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *joined;
	int c;

	optind = 1;
	opterr = 0;
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
		if (c == 'h') {
			cli_usage();
			exit(0);
		} else if (c == ':') {
			return cli_missing_argument("diff", argv[optind - 1]);
		} else if (c == 'j') {
			*json = true;
		} else if (c == 'o') {
			if (asprintf(&joined, "%s%s%s",
				     *options ? *options : "",
				     *options ? "," : "", optarg) < 0)
				return EXIT_USAGE;
			free(*options);
			*options = joined;
		} else {
			fprintf(
			    stderr,
			    "lamina: diff: invalid option '%s'; run lamina --help\n",
			    argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind < argc - 1 || (optind == argc && !*options)) {
		fputs(
		    "lamina: diff: usage: lamina diff [--json] MERGED, or lamina diff [--json] UPPERDIR -o lowerdir=DIR[:DIR...]\n",
		    stderr);
		return EXIT_USAGE;
	}
	return 0;
}

int cmd_diff(int argc, char **argv)
{
	struct cli_stack s = {0};
	char *options = NULL;
	const char *target;
	bool json = false;
	int rc = diff_parse(argc, argv, &json, &options);

	/* The walk over the layers keeps a descriptor per level. */
	fdlimit_raise(NULL);
	if (!rc) {
		target = optind < argc ? argv[optind] : NULL;
		rc = options ? stack_of_options(target, options, &s)
			     : stack_of_mount(target, &s);
	}
	if (!rc)
		rc = diff_stack(&s, json);
	cli_stack_free(&s);
	free(options);
	return rc;
}
