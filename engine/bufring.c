/*
 * bufring.c: a shim for io_uring_setup_buf_ring/io_uring_free_buf_ring, which liburing only has
 * from 2.4 on (Debian 12 ships 2.3). With ENG_HAVE_SETUP_BUF_RING the library's functions are
 * used; otherwise we map the ring ourselves (page-aligned anonymous memory, as the kernel
 * requires), register it with io_uring_register_buf_ring and initialise its tail. Owns that
 * mapping until eng_bufring_free. Called on the shard's thread (the ring's single issuer).
 */
#include "bufring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "ringpolicyd_config.h"

#if ENG_HAVE_SETUP_BUF_RING

struct io_uring_buf_ring *eng_bufring_setup(struct io_uring *ring, unsigned entries, int bgid,
                                            int *err)
{
    return io_uring_setup_buf_ring(ring, entries, bgid, 0, err);
}

void eng_bufring_free(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries,
                      int bgid)
{
    io_uring_free_buf_ring(ring, br, entries, bgid);
}

#else

static size_t ring_bytes(unsigned entries)
{
    return (size_t)entries * sizeof(struct io_uring_buf);
}

struct io_uring_buf_ring *eng_bufring_setup(struct io_uring *ring, unsigned entries, int bgid,
                                            int *err)
{
    void *mem =
        mmap(NULL, ring_bytes(entries), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)mem;
    reg.ring_entries = entries;
    reg.bgid = (unsigned short)bgid;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(mem, ring_bytes(entries));
        *err = rc;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    return br;
}

void eng_bufring_free(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries,
                      int bgid)
{
    /* Fails harmlessly when called off the issuer thread; closing the ring unregisters it. */
    (void)io_uring_unregister_buf_ring(ring, bgid);
    munmap(br, ring_bytes(entries));
}

#endif
