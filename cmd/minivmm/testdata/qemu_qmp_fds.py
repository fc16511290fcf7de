# Drives minivmm with QEMU's own QMP library, qemu.qmp (QMPClient), the way
# its users pass fds: send_fd_scm() sends the fd with a lone space in a
# sendmsg of its own, then the command that takes it follows in a later
# write. Usage: qemu_qmp_fds.py SOCKET IMAGE. Prints one JSON line after
# add-fd ({"added": ...}) and waits for a line on stdin, so that the Go
# test can look at the VMM's fds; then a JSON line with everything else.
import asyncio
import json
import os
import sys

from qemu.qmp import ConnectError, ExecuteError, QMPClient


async def main(sock, image):
    # The socket file exists a moment before it listens: retry.
    for attempt in range(250):
        qmp = QMPClient('minivmm-test')
        try:
            await qmp.connect(sock)
            break
        except ConnectError:
            if attempt == 249:
                raise
            await asyncio.sleep(0.02)
    out = {'capabilities': qmp.greeting.QMP.capabilities}

    fd = os.open(image, os.O_RDONLY)
    qmp.send_fd_scm(fd)
    os.close(fd)
    added = await qmp.execute('add-fd', {'fdset-id': 3, 'opaque': 'qemu.qmp'})
    print(json.dumps({'added': added}), flush=True)
    sys.stdin.readline()

    out['query-fdsets'] = await qmp.execute('query-fdsets')

    fd = os.open(image, os.O_RDWR)
    qmp.send_fd_scm(fd)
    os.close(fd)
    out['getfd'] = await qmp.execute('getfd', {'fdname': 'mig'})
    out['closefd'] = await qmp.execute('closefd', {'fdname': 'mig'})
    out['remove-fd'] = await qmp.execute('remove-fd', {'fdset-id': 3})
    out['query-fdsets after'] = await qmp.execute('query-fdsets')

    # The fd was taken: a second add-fd has none.
    try:
        await qmp.execute('add-fd', {'fdset-id': 4})
        out['add-fd without fd'] = 'succeeded'
    except ExecuteError as e:
        out["add-fd without fd"] = e.error.error.desc
    try:
        await qmp.execute('query-status', oob=True)
        out['exec-oob'] = 'succeeded'
    except ExecuteError as e:
        out["exec-oob"] = e.error.error.desc
    out['query-status'] = await qmp.execute('query-status')
    await qmp.disconnect()
    print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
