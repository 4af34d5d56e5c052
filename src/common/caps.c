// SPDX-License-Identifier: GPL-2.0-or-later
/* The process's own capabilities. */
#include "caps.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

bool have_capability(int cap)
{
	struct __user_cap_header_struct hdr = {.version =
						   _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];

	if (cap < 0 || cap >= 64 || syscall(SYS_capget, &hdr, data) < 0)
		return false;
	return data[cap / 32].effective & (1u << (cap % 32));
}
