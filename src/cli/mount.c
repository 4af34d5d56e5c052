// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * lamina mount: check the layers, mount, and serve. The command returns
 * only once the kernel has finished INIT, so a script may use the mount
 * point as soon as it exits.
 */
#include "cli.h"
#include "common/fdlimit.h"
#include "common/log.h"
#include "fuse/transport.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FD_TABLE_START 4096 /* descriptor table entries made at start */

static int append_options(struct mount_args *args, const char *opts)
{
	size_t old = args->options ? strlen(args->options) : 0;
	char *s = realloc(args->options, old + strlen(opts) + 2);

	if (!s)
		return -ENOMEM;
	if (old)
		s[old++] = ',';
	strcpy(s + old, opts);
	args->options = s;
	return 0;
}

int cli_parse_mount_args(int argc, char **argv, struct mount_args *args)
{
	static const struct option longopts[] = {
		{"foreground", no_argument, NULL, 'f'},
		{"debug", no_argument, NULL, 'd'},
		{"options", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	opterr = 0; /* the messages below carry the prefix */
	/* The leading ':' makes a missing argument return ':', not '?'. */
	while ((c = getopt_long(argc, argv, ":fdo:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			args->foreground = true;
			break;
		case 'd':
			args->debug = args->foreground = true;
			break;
		case 'o':
			if (append_options(args, optarg))
				return EXIT_MOUNT_FAIL;
			break;
		case 'h':
			cli_usage();
			exit(0);
		case ':':
			return cli_missing_argument("mount", argv[optind - 1]);
		default:
			fprintf(stderr, "lamina: invalid option '%s'; run lamina --help\n",
				argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind < argc - 1 && strchr(argv[optind], '=')) {
		fprintf(stderr, "lamina: '%s' looks like mount options; put -o before it\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	if (optind != argc - 1) {
		fputs("lamina: give exactly one mount point; run lamina --help\n",
		      stderr);
		return EXIT_USAGE;
	}
	args->mountpoint = argv[optind];
	if (!args->options) {
		fputs("lamina: no options given; add -o lowerdir=DIR,...\n",
		      stderr);
		return EXIT_USAGE;
	}
	return 0;
}

static int mount_config(struct mount_args *args, struct ovl_config *cfg)
{
	struct ovl_error e = {{0}};
	char real[PATH_MAX];
	struct stat st;

	cfg->passthrough = true;
	cfg->io_uring = true;
	cfg->prefetch = true;
	cfg->allow_other = geteuid() == 0;
	if (ovl_parse_options(cfg, args->options, &e) ||
	    ovl_config_finish(cfg, &e)) {
		fprintf(stderr, "lamina: %s\n", e.msg);
		return EXIT_USAGE;
	}
	if (!realpath(args->mountpoint, real) || stat(real, &st) < 0) {
		int err = errno;

		fprintf(stderr, "lamina: mount point %s: %s; %s\n",
			args->mountpoint, strerror(err),
			cli_mountpoint_advice(err));
		return EXIT_MOUNT_FAIL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "lamina: mount point %s: not a directory; give a directory\n",
			args->mountpoint);
		return EXIT_MOUNT_FAIL;
	}
	/* The source given before the mount point wins over fsname=. It is
	 * stored as fsname because daemon_config_reply() sends fsname, and
	 * lamina reset --remount mounts again with what that reply sends. */
	if (args->source) {
		free(cfg->fsname);
		cfg->fsname = strdup(args->source);
		if (!cfg->fsname)
			return EXIT_MOUNT_FAIL;
	}
	cfg->mountpoint = strdup(real);
	return cfg->mountpoint ? 0 : EXIT_MOUNT_FAIL;
}

/* Report a failed mount through fusermount3, with its own reason. */
static void report_fusermount_error(const char *mnt, struct fuse_session *se)
{
	int status = fuse_session_fusermount_status(se);
	const char *reason = fuse_session_fusermount_error(se);
	char failure[320];

	if (status == 127) {
		fprintf(
		    stderr,
		    "lamina: mounting %s as uid %u needs fusermount3, which is not in PATH; install the fuse3 package, or mount as root\n",
		    mnt, (unsigned int)getuid());
		return;
	}
	if (reason[0])
		snprintf(failure, sizeof(failure), "%s", reason);
	else
		snprintf(failure, sizeof(failure), "exit status %d", status);
	if (access("/dev/fuse", R_OK | W_OK) < 0 && errno == EACCES)
		fprintf(
		    stderr,
		    "lamina: mounting %s: fusermount3 failed (%s): /dev/fuse is open to root only, so as root run 'chmod 0666 /dev/fuse' to let users mount FUSE filesystems, or mount as root\n",
		    mnt, failure);
	else
		fprintf(
		    stderr,
		    "lamina: mounting %s: fusermount3 failed (%s); fix what it reports, or mount as root\n",
		    mnt, failure);
}

static void report_mount_error(const char *mnt, int err,
			       struct fuse_session *se)
{
	if (se && fuse_session_fusermount_status(se) > 0) {
		report_fusermount_error(mnt, se);
		return;
	}
	switch (-err) {
	case ENOENT:
	case ENXIO:
		fprintf(stderr, "lamina: /dev/fuse: %s; load the module with 'modprobe fuse'\n",
			strerror(-err));
		break;
	case ENODEV:
		fprintf(stderr, "lamina: /dev/fuse is not the FUSE device (character device 10:229); recreate it with 'mknod -m 666 /dev/fuse c 10 229' or load the fuse module\n");
		break;
	case EACCES:
	case EPERM:
		fprintf(stderr, "lamina: mounting %s: %s; run as root, or install fuse3 so that fusermount3 can mount for you\n",
			mnt, strerror(-err));
		break;
	default:
		fprintf(stderr, "lamina: mounting %s failed: %s\n", mnt,
			strerror(-err));
	}
}

static void on_serve_exit(void *arg)
{
	(void)arg;
	/* Wake the main thread, which waits for signals. */
	kill(getpid(), SIGUSR1);
}

/*
 * Every open file in the mount holds a descriptor in the daemon, and
 * directories keep one per lower layer, so the soft limit goes up to the
 * hard one, as a server's would. The descriptor table is grown now, while
 * one thread runs: growing it later, with the workers running, waits for
 * an RCU grace period each time, milliseconds in the middle of a request.
 */
static void prepare_fd_table(void)
{
	struct rlimit rl = {0, 0};
	int fd, err = fdlimit_raise(&rl);

	if (err)
		log_warn("raising the open file limit to %llu failed: %s",
			 (unsigned long long)rl.rlim_max, strerror(-err));
	fd = rl.rlim_cur < FD_TABLE_START ? (int)rl.rlim_cur - 1
					   : FD_TABLE_START - 1;
	if (fd > 2 && dup2(2, fd) == fd)
		close(fd);
}

/*
 * Serve until unmounted or stopped by a signal; write to ready_fd after
 * INIT. link is the daemon link's socket, whose thread starts after INIT.
 */
static int serve(struct ovl_fs *fs, int link, int ready_fd)
{
	struct fuse_session *se = fs->se;
	const char *fs_mountpoint = fs->config.mountpoint;
	sigset_t set;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int workers = cpus > 2 ? (unsigned int)cpus * 2 : 4;
	int sig = 0, err;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD); /* the directory reader process ended */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	prepare_fd_table();
	/* Forks, so it comes while this is the only thread. */
	ovl_readahead_probe(fs);

	err = fuse_session_start(se, workers > 16 ? 16 : workers,
				 on_serve_exit, NULL);
	if (err) {
		log_err("starting worker threads failed: %s", strerror(-err));
		fuse_session_unmount(se);
		return EXIT_MOUNT_FAIL;
	}
	if (fuse_session_wait_ready(se)) {
		log_info("serving %s", fs_mountpoint);
		if (link >= 0 &&
		    daemon_link_serve(link, daemon_config_reply, fs) < 0)
			log_warn("lamina status cannot ask this daemon for its configuration: starting the daemon link failed");
		if (ready_fd >= 0 && write(ready_fd, "R", 1) != 1)
			log_warn("telling the parent the mount is ready failed");
	}
	if (ready_fd >= 0)
		close(ready_fd);
	while (sig != SIGUSR1) {
		if (sigwait(&set, &sig))
			continue;
		if (sig == SIGCHLD) {
			ovl_readahead_reap(fs);
			continue;
		}
		if (sig != SIGUSR1) {
			log_info("signal %d: unmounting", sig);
			fuse_session_unmount(se);
		}
	}
	fuse_session_unmount(se);
	fuse_session_join(se);
	daemon_link_stop();
	log_info("%s unmounted, exiting", fs_mountpoint);
	return 0;
}

/* The parent's side of going to the background: wait for "ready". */
static int wait_for_daemon(int fd, const char *mnt)
{
	char c = 0;
	ssize_t n;

	do
		n = read(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1 && c == 'R')
		return 0;
	fprintf(stderr, "lamina: the daemon stopped before %s was ready; run with -f to see why\n",
		mnt);
	return EXIT_MOUNT_FAIL;
}

static void detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static int serve_background(struct ovl_fs *fs, int link)
{
	const char *mnt = fs->config.mountpoint;
	int pipefd[2], rc;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return EXIT_MOUNT_FAIL;
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "lamina: fork failed: %s\n", strerror(errno));
		return EXIT_MOUNT_FAIL;
	}
	if (pid > 0) {
		close(pipefd[1]);
		rc = wait_for_daemon(pipefd[0], mnt);
		/* The daemon owns the mount now; leave it alone. */
		_exit(rc);
	}
	close(pipefd[0]);
	daemon_link_adopt(link);
	setsid();
	if (chdir("/") < 0)
		log_warn("chdir / failed: %s", strerror(errno));
	detach_stdio();
	log_use_syslog();
	return serve(fs, link, pipefd[1]);
}

/* cmd_mount() for options it does not own: it frees args->options. */
int cmd_mount_copy(const struct mount_args *args)
{
	struct mount_args copy = *args;

	copy.options = strdup(args->options);
	return copy.options ? cmd_mount(&copy) : EXIT_MOUNT_FAIL;
}

int cmd_mount(struct mount_args *args)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	struct fuse_session *se = NULL;
	struct fuse_mount_opts opts = {.subtype = "lamina",
				       .default_permissions = true};
	struct ovl_error e = {{0}};
	int rc, err, link = -1;

	if (!fs)
		return EXIT_MOUNT_FAIL;
	rc = mount_config(args, &fs->config);
	if (rc) {
		ovl_config_free(&fs->config);
		free(fs);
		return rc;
	}
	log_set_debug(args->debug);
	umask(0);
	cli_note_kernel_overlays(fs);
	if (ovl_fs_setup(fs, &e)) {
		fprintf(stderr, "lamina: %s\n", e.msg);
		rc = EXIT_MOUNT_FAIL;
		goto out;
	}
	ovl_check_report(fs, cli_print_warning, NULL);
	err = fuse_session_new(&ovl_fuse_ops, fs, args->debug, &se);
	fs->se = se;
	opts.source = fs->config.fsname ? fs->config.fsname : "lamina";
	opts.allow_other = fs->config.allow_other;
	opts.mount_flags = fs->config.mount_flags;
	if (!err)
		err = fuse_session_mount(se, fs->config.mountpoint, &opts);
	if (err) {
		report_mount_error(fs->config.mountpoint, err, se);
		rc = EXIT_MOUNT_FAIL;
		goto out;
	}
	/* Held until the daemon has finished, for lamina umount to wait on. */
	link = daemon_link_listen(fs->config.mountpoint);
	if (args->foreground)
		rc = serve(fs, link, -1);
	else
		rc = serve_background(fs, link);
out:
	/* The prefetch thread reports to the session until it stops. */
	ovl_prefetch_stop(fs);
	fuse_session_destroy(se);
	fs->se = NULL;
	/* After the connection ended, so that no reader waits for a reply. */
	ovl_readahead_stop(fs);
	ovl_fs_teardown(fs);
	daemon_link_release();
	if (link >= 0)
		close(link);
	free(fs);
	free(args->options);
	return rc;
}
