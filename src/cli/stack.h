/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Layer stacks as lamina status, diff and reset see them: the live
 * mounts (lamina's and the kernel's overlay mounts) and the layers and
 * features of each, from mountinfo or from the lamina daemon.
 */
#ifndef LAMINA_CLI_STACK_H
#define LAMINA_CLI_STACK_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- mounts.c ---- */

/* One overlay or fuse.lamina line of /proc/self/mountinfo, unescaped. */
struct cli_mount {
	char *mountpoint;
	char *fstype;	     /* "overlay" or "fuse.lamina" */
	char *mount_options; /* per-mount options: rw or ro, nosuid, ... */
	char *super_options; /* filesystem options, still octal-escaped */
};

int cli_mounts_read(struct cli_mount **mounts, size_t *count);
void cli_mounts_free(struct cli_mount *mounts, size_t count);
const struct cli_mount *cli_mounts_find(const struct cli_mount *mounts,
					size_t count, const char *path);

/* ---- stack.c ---- */

/* A layer stack and the features in effect on it. */
struct cli_stack {
	char *mountpoint; /* NULL for layers given on the command line */
	char *fstype;	  /* "overlay", "fuse.lamina" or NULL */
	pid_t pid;	  /* the lamina daemon, 0 for the kernel */
	char **lowers;	  /* absolute, top first */
	int nlower;
	char *upper; /* NULL on a read-only stack */
	char *work;
	char redirect_dir[16]; /* on, follow, off or nofollow */
	char xino[8];	       /* on, auto or off */
	bool userxattr;
	bool volatile_mount;
	bool read_only;
	bool passthrough; /* FUSE passthrough in use (lamina only) */
	bool io_uring;	  /* requests come through io_uring (lamina only) */
	bool prefetch;	  /* lower directories read ahead (lamina only) */
	bool index;	  /* hard links kept together through workdir/index */
	bool metacopy;	  /* metadata copied up alone where data may wait */
	char *options;	  /* lamina: -o options that mount it again */
};

int cli_stack_from_mount(const struct cli_mount *m, struct cli_stack *s,
			 char *err, size_t size);
int cli_stack_from_options(const char *options, struct cli_stack *s, char *err,
			   size_t size);
void cli_stack_free(struct cli_stack *s);

/* ---- daemon_link.c: the client side of a daemon's configuration ---- */
int daemon_link_query(const char *mountpoint, struct cli_stack *s);

/* ---- json.c ---- */
void json_string(FILE *f, const char *s);
void text_path(FILE *f, const char *s);
void option_path(FILE *f, const char *s);

#endif
