/*
 * bootinit test boot sector (MBR), 16-bit real mode, GNU as syntax.
 *
 * Reads NSECTORS sectors starting at START_LBA from the boot drive with BIOS INT 13h
 * extended reads (AH=42h, Disk Address Packet; EDD 3.0), 64 sectors per call, hashes
 * them as little-endian 32-bit words with FNV-1a (h ^= w; h *= 16777619, starting at
 * 2166136261), prints on COM1 (0x3F8)
 *
 *     BOOTINIT-BOOTSECTOR OK sum=xxxxxxxx sectors=N
 *
 * and leaves QEMU through isa-debug-exit (port 0xF4): value 0x10 -> exit status 33.
 * A failed read prints "BOOTINIT-BOOTSECTOR FAIL int13 status=000000XX" (AH) and
 * writes 0x11 (status 35).
 * NSECTORS and START_LBA are 32-bit little-endian words at offsets 0x1B0 and 0x1B4,
 * patched by qemu/images.py.
 *
 * Build: as --32 -o bs.o bootsector.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary
 */
        .code16
        .text
        .globl  _start

        /* scratch variables live just past the sector */
        .set    hash,   0x7e00
        .set    left,   0x7e04
        .set    count,  0x7e08
        .set    drive,  0x7e0a
        .set    BUFSEG, 0x1000          /* read buffer at 1000:0000 */
        .set    CHUNK,  64              /* sectors per INT 13h call */

_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        ljmp    $0, $norm
norm:
        sti
        cld
        movb    %dl, drive

        /* COM1 0x3F8: 115200 8N1, FIFO on: (register offset, value) pairs */
        movw    $uart, %si
        movw    $6, %cx
0:
        movw    $0x3f8, %dx
        lodsb
        addb    %al, %dl
        lodsb
        outb    %al, %dx
        loop    0b

        movl    $0x811c9dc5, hash
        movl    nsectors, %eax
        movl    %eax, left
        movl    start_lba, %eax
        movl    %eax, dap_lba

chunk:
        movl    left, %eax
        testl   %eax, %eax
        jz      done
        cmpl    $CHUNK, %eax
        jbe     1f
        movl    $CHUNK, %eax
1:
        movw    %ax, dap_count
        movw    %ax, count
        movw    $dap, %si
        movb    drive, %dl
        movb    $0x42, %ah              /* extended read (EDD) */
        int     $0x13
        jc      readerr

        /* FNV-1a over count*128 little-endian dwords at BUFSEG:0 */
        movw    $BUFSEG, %ax
        movw    %ax, %fs
        xorw    %si, %si
        movw    count, %cx
        shlw    $7, %cx
        movl    hash, %ebx
2:
        xorl    %fs:(%si), %ebx
        imull   $0x01000193, %ebx, %ebx
        addw    $4, %si
        loop    2b
        movl    %ebx, hash

        movzwl  count, %eax
        addl    %eax, dap_lba
        subl    %eax, left
        jmp     chunk

done:
        movw    $msg_ok, %si
        call    puts
        movl    hash, %eax
        call    puthex
        movw    $msg_sectors, %si
        call    puts
        movl    nsectors, %eax
        call    putdec
        movb    $0x10, %bl
        jmp     leave

readerr:
        movzbl  %ah, %ebx
        pushl   %ebx
        movw    $msg_fail, %si
        call    puts
        popl    %eax
        call    puthex
        movb    $0x11, %bl

leave:
        movw    $msg_crlf, %si
        call    puts
        movb    %bl, %al
        movw    $0xf4, %dx              /* isa-debug-exit */
        outb    %al, %dx
halt:
        cli
        hlt
        jmp     halt

/* putc: AL to COM1 once the transmit holding register is empty */
putc:
        pushw   %ax
        movw    $0x3fd, %dx
3:
        inb     %dx, %al
        testb   $0x20, %al
        jz      3b
        popw    %ax
        movb    $0xf8, %dl
        outb    %al, %dx
        ret

/* puts: NUL-terminated string at DS:SI */
puts:
        lodsb
        testb   %al, %al
        jz      4f
        call    putc
        jmp     puts
4:
        ret

/* puthex: EAX as 8 lowercase hex digits */
puthex:
        movw    $8, %cx
5:
        roll    $4, %eax
        pushl   %eax
        andb    $0x0f, %al
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     6f
        addb    $('a' - '0' - 10), %al
6:
        call    putc
        popl    %eax
        loop    5b
        ret

/* putdec: EAX in decimal */
putdec:
        xorw    %cx, %cx
        movl    $10, %ebx
7:
        xorl    %edx, %edx
        divl    %ebx
        pushw   %dx
        incw    %cx
        testl   %eax, %eax
        jnz     7b
8:
        popw    %ax
        addb    $'0', %al
        call    putc
        loop    8b
        ret

uart:   .byte   1, 0x00, 3, 0x80, 0, 0x01, 1, 0x00, 3, 0x03, 2, 0xc7
msg_ok:         .asciz  "BOOTINIT-BOOTSECTOR OK sum="
msg_sectors:    .asciz  " sectors="
msg_fail:       .asciz  "BOOTINIT-BOOTSECTOR FAIL int13 status="
msg_crlf:       .asciz  "\r\n"

dap:    .byte   16, 0           /* Disk Address Packet: size, reserved */
dap_count:
        .word   0               /* sectors */
        .word   0x0000, BUFSEG  /* buffer offset, segment */
dap_lba:
        .long   0, 0            /* LBA (64-bit) */

        .org    0x1b0
nsectors:
        .long   0
start_lba:
        .long   1
        .org    0x1fe
        .byte   0x55, 0xaa
