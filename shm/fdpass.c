/*
 * shm/fdpass.c: an anonymous segment's fd passed over a Unix socket
 * (SCM_RIGHTS), tagged so that a receiver refuses any other message.
 */
#include "shm/seg.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FDMSG_TAG "STOAFD1"

int seg_send_fd(int sock, const struct seg *s)
{
        char tag[8] = FDMSG_TAG;
        struct iovec iov = { .iov_base = tag, .iov_len = sizeof(tag) };
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
        struct msghdr m = {
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
        };
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);

        if (!s || s->fd < 0)
                return -EINVAL;
        memset(u.buf, 0, sizeof(u.buf));
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &s->fd, sizeof(int));
        if (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

int seg_recv_fd(int sock, int *ret_fd)
{
        char tag[8];
        struct iovec iov = { .iov_base = tag, .iov_len = sizeof(tag) };
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
        struct msghdr m = {
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
        };
        int fd = -1;

        if (!ret_fd)
                return -EINVAL;
        ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        }
        if (n != sizeof(tag) || memcmp(tag, FDMSG_TAG, sizeof(tag)) != 0) {
                if (fd >= 0)
                        close(fd);
                seg_set_errdetail("message on the socket is not a stoa segment fd");
                return STOA_E_FOREIGN;
        }
        if (fd < 0) {
                seg_set_errdetail("no fd in the message");
                return -EBADMSG;
        }
        *ret_fd = fd;
        return 0;
}
