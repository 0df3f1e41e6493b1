import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseMountInfo } from '../drivers/zfs.js';

/** Reading ZFS mounts from a mountinfo text (proc(5)), as the driver does instead of `zfs get mountpoint`. */

const TEXT = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
  // zfs-fuse: a dataset whose mount point has a space, and one with no optional fields
  '739 27 0:457 / /var/lib/bpg\\040x/db rw,relatime shared:400 - fuse.zfs tank/bpg/db rw,user_id=0,group_id=0',
  '869 739 0:458 / /var/lib/bpg\\040x/db/main rw,relatime - fuse.zfs tank/bpg/db/main rw,user_id=0',
  // kernel OpenZFS, and a bind of a folder inside a dataset (its root is that folder)
  '901 22 0:60 / /tank/k rw,noatime shared:500 - zfs tank/k rw,xattr,noacl',
  '902 22 0:458 /data /mnt/elsewhere rw,relatime - fuse.zfs tank/bpg/db/main rw',
  // a backslash in a path, and a line that is not ZFS
  '903 22 0:61 / /srv/a\\134b rw - zfs tank/odd rw',
  '904 22 0:62 / /proc rw - proc proc rw',
  '',
].join('\n');

describe('ZFS mounts from the mount table', () => {
  it('gives each ZFS mount its dataset, its root inside the dataset and where it is, unescaped', () => {
    assert.deepEqual(parseMountInfo(TEXT), [
      { dataset: 'tank/bpg/db', root: '/', at: '/var/lib/bpg x/db' },
      { dataset: 'tank/bpg/db/main', root: '/', at: '/var/lib/bpg x/db/main' },
      { dataset: 'tank/k', root: '/', at: '/tank/k' },
      { dataset: 'tank/bpg/db/main', root: '/data', at: '/mnt/elsewhere' },
      { dataset: 'tank/odd', root: '/', at: '/srv/a\\b' },
    ]);
  });

  it('reads nothing from an empty or unreadable table', () => {
    assert.deepEqual(parseMountInfo(''), []);
    assert.deepEqual(parseMountInfo('garbage without the separator\n'), []);
  });
});
