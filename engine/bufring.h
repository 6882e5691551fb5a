/*
 * bufring.h: set up and tear down a provided-buffer ring on an io_uring (see bufring.c).
 */
#ifndef ENG_BUFRING_H
#define ENG_BUFRING_H

#include <liburing.h>

/* Registers a buffer ring of entries (power of two) under group bgid. Returns the ring or NULL
 * with -errno in *err. */
struct io_uring_buf_ring *eng_bufring_setup(struct io_uring *ring, unsigned entries, int bgid,
                                            int *err);
void eng_bufring_free(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries,
                      int bgid);

#endif
