/* Who is at the other end of a connection, and whether it is an
 * administrator (daemon/peer.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PEER_MAX_GROUPS 65536 /* NGROUPS_MAX on Linux */

/* The credentials the kernel recorded when the peer connected. */
struct peer_cred {
        struct ucred ucred; /* SO_PEERCRED: pid, effective uid and gid */
        gid_t *groups;      /* SO_PEERGROUPS: the supplementary groups */
        size_t n_groups;
};

/* Reads SO_PEERCRED and SO_PEERGROUPS of a connected Unix socket. */
int peer_cred_read(int fd, struct peer_cred *ret);
void peer_cred_clear(struct peer_cred *p);

/* The administrators' group, resolved from its name once per configuration
 * (the name is all the configuration holds; membership is never looked up). */
struct peer_admin_group {
        bool exists;
        gid_t gid;
};
/* 0 and the group, -ENOENT (no such group: only root is an administrator),
 * or another negative errno. An empty or NULL name is -ENOENT. */
int peer_admin_group_resolve(const char *name, struct peer_admin_group *ret);

/* uid 0, or the admin group as the peer's gid or one of its supplementary
 * groups, as the kernel saw them at connect time. */
bool peer_is_admin(const struct peer_cred *p, const struct peer_admin_group *g);
