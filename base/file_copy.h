// base/file_copy: one file's bytes made another's, in place. What the write-back
// of a cache copy to its remote file uses (fuse/ at flush, fsync and last
// close; daemon/ at crash recovery), so both write the same way.
#pragma once

#include "base/result.h"

namespace hotshard {

// Makes the regular file open at dst_fd (O_WRONLY or O_RDWR) hold exactly the
// bytes of src_fd (readable): every byte of src is pwritten at the same offset
// of dst (1 MiB at a time, from offset 0 to src's size as fstat says at the
// start), dst is truncated to that size, then fsync'd, so the bytes are durable
// when it returns Ok. dst keeps its inode (other holders of it see the bytes:
// the rule NFS close-to-open needs). Errors keep their errno and say which side
// failed ("read copy", "write remote", "truncate remote", "fsync remote"); dst
// may then hold a mix of old and new bytes, as after an interrupted write(2).
Status copyFileInPlace(int src_fd, int dst_fd);

}  // namespace hotshard
