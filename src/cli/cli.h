/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The lamina command line: subcommands and their exit codes. */
#ifndef LAMINA_CLI_H
#define LAMINA_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes, as mount(8) uses them. */
#define EXIT_USAGE 1	     /* invalid command line or option */
#define EXIT_MOUNT_FAIL 32   /* the mount or unmount failed */
#define EXIT_CHECK_WARNING 2 /* lamina check: warnings only */
#define EXIT_CHECK_ERROR 3   /* lamina check: the mount would fail */

struct mount_args {
	const char *source; /* NULL: "lamina" */
	const char *mountpoint;
	char *options; /* all -o arguments joined by commas */
	bool foreground;
	bool debug;
};

int cmd_mount(struct mount_args *args);
int cmd_mount_copy(const struct mount_args *args);
int cmd_mount_helper(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_reset(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_squash(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

/* in_use.c */
struct ovl_fs;
#define CLI_UPPER_MOUNTED 1
#define CLI_UPPER_COMMITTING 2
/*
 * Check whether a mount uses upperdir (CLI_UPPER_MOUNTED) or a lamina
 * commit of it runs (CLI_UPPER_COMMITTING), with a sentence in why.
 * Returns 0 when neither is the case, or a negative errno.
 */
int cli_upper_in_use(const char *upperdir, char *why, size_t size);
/*
 * Lock upperdir for lamina commit until *lock_fd is closed. The lock is
 * the flock that a lamina mount takes, plus a mark that distinguishes a
 * running commit from a mount. Returns 0, CLI_UPPER_MOUNTED with a
 * sentence in why, CLI_UPPER_COMMITTING when another commit has the
 * lock, or a negative errno. cli_upper_lock_dir() does the same for fd,
 * a directory that is about to become the upper.
 */
int cli_upper_lock(const char *upperdir, int *lock_fd, char *why, size_t size);
int cli_upper_lock_dir(int fd);
/*
 * Store in fs->upper_kernel_mount and fs->work_kernel_mount the mount
 * points of kernel overlay mounts whose upperdir or workdir is the
 * upperdir or workdir in fs->config, for ovl_fs_setup() to check.
 * NOTE: mounts of other mount namespaces are not in mountinfo, so they
 * go unnoticed.
 */
void cli_note_kernel_overlays(struct ovl_fs *fs);
void cli_unescape_octal(char *s);
/* The fix to give for an error of stat(2) on a mount point. */
const char *cli_mountpoint_advice(int err);
int cli_mount_id(int dirfd, const char *name, uint64_t *id);

/* daemon_link.c */
int daemon_link_listen(const char *mountpoint);
void daemon_link_adopt(int fd);
int daemon_link_connect(const char *mountpoint);
void daemon_link_wait(int fd, const char *mountpoint);

/* daemon_answer.c: the daemon's side; a reply is malloc-ed, *len set. */
typedef char *(*daemon_link_reply_fn)(void *arg, size_t *len);
int daemon_link_serve(int listen_fd, daemon_link_reply_fn reply, void *arg);
void daemon_link_stop(void);
void daemon_link_release(void);

/* daemon_config.c: the reply of a lamina daemon; arg is its ovl_fs. */
char *daemon_config_reply(void *arg, size_t *len);
enum ovl_check_level;
void cli_print_warning(void *arg, enum ovl_check_level level, const char *msg);
int cli_parse_mount_args(int argc, char **argv, struct mount_args *args);
void cli_usage(void);
/* Report an option given last without its argument; returns EXIT_USAGE. */
int cli_missing_argument(const char *cmd, const char *option);

#endif
