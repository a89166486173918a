/* The poll()/select() merge with the parking epoll fds, as plain functions over the caller's
 * arrays (pollmerge.h); poll.c wraps them around the real calls. */
#include <stdlib.h>
#include <string.h>

#include "pollmerge.h"

nfds_t shim_pollmerge_build(struct shim_pollmerge *m, const struct pollfd *fds, nfds_t n,
			    shim_park_lookup look, void *ctx)
{
	nfds_t total;

	m->all = m->all_stack;
	m->hit = m->hit_stack;
	m->n = n;
	m->nhit = 0;
	for (nfds_t i = 0; i < n; i++) {
		int pfd;
		if (!(fds[i].events & POLLIN) || (pfd = look(fds[i].fd, ctx)) < 0)
			continue;
		if (m->nhit == SHIM_POLLMERGE_STACK && m->hit == m->hit_stack) {
			/* More than the stack holds: room for every entry, as many as can follow. */
			struct shim_poll_hit *h = malloc(n * sizeof(*h));
			if (!h)
				break; /* the listeners beyond are watched without their parks */
			memcpy(h, m->hit_stack, sizeof(m->hit_stack));
			m->hit = h;
		}
		m->hit[m->nhit].i = i;
		m->hit[m->nhit++].pfd = pfd;
	}
	if (m->nhit == 0)
		return 0;
	total = n + m->nhit;
	if (total > SHIM_POLLMERGE_STACK && (m->all = malloc(total * sizeof(*m->all))) == NULL) {
		m->all = m->all_stack;
		return 0;
	}
	if (n)
		memcpy(m->all, fds, n * sizeof(*m->all));
	for (nfds_t k = 0; k < m->nhit; k++) {
		m->all[n + k].fd = m->hit[k].pfd;
		m->all[n + k].events = POLLIN;
		m->all[n + k].revents = 0;
	}
	return total;
}

int shim_pollmerge_fold(const struct shim_pollmerge *m, struct pollfd *fds, int r)
{
	nfds_t n = m->n;

	if (r < 0)
		return r;
	r = 0;
	for (nfds_t i = 0; i < n; i++)
		fds[i].revents = m->all[i].revents;
	for (nfds_t k = 0; k < m->nhit; k++)
		if (m->all[n + k].revents & POLLIN)
			fds[m->hit[k].i].revents |= POLLIN;
	for (nfds_t i = 0; i < n; i++)
		if (fds[i].revents)
			r++;
	return r;
}

void shim_pollmerge_free(struct shim_pollmerge *m)
{
	if (m->all != m->all_stack)
		free(m->all);
	if (m->hit != m->hit_stack)
		free(m->hit);
	m->all = m->all_stack;
	m->hit = m->hit_stack;
}

int shim_selectmerge_build(struct shim_selectmerge *m, const fd_set *r, int nfds, size_t bytes,
			   fd_set *rr, shim_park_lookup look, void *ctx)
{
	m->k = 0;
	m->top = nfds;
	for (int fd = 0; fd < nfds && m->k < SHIM_SELECTMERGE_MAX; fd++) {
		int e;
		if (FD_ISSET(fd, r) && (e = look(fd, ctx)) >= 0 && e < FD_SETSIZE) {
			m->lfd[m->k] = fd;
			m->pfd[m->k++] = e;
			if (e + 1 > m->top)
				m->top = e + 1;
		}
	}
	if (m->k == 0)
		return 0;
	FD_ZERO(rr);
	memcpy(rr, r, bytes);
	for (int i = 0; i < m->k; i++)
		FD_SET(m->pfd[i], rr);
	return m->k;
}

int shim_selectmerge_fold(const struct shim_selectmerge *m, fd_set *rr, int res)
{
	if (res <= 0)
		return res;
	for (int i = 0; i < m->k; i++) {
		if (!FD_ISSET(m->pfd[i], rr))
			continue;
		FD_CLR(m->pfd[i], rr);
		res--;
		if (!FD_ISSET(m->lfd[i], rr)) {
			FD_SET(m->lfd[i], rr);
			res++;
		}
	}
	return res;
}
