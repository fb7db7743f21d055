package Test::LB::Child;
# Starts one of t/'s Python helpers (t/dns.py, t/misbehave.py) as a child whose stdin is a pipe
# from this process (the helpers exit when it closes, so they never outlive a test, even one
# that crashes) and waits until it prints "ready" on stdout:
#
#     my ($pid, $stdin, $output) = Test::LB::Child::spawn_ready('t/dns.py', $script, @args);
#
# $output is everything it printed up to "ready" (e.g. "mode=port" lines). A helper that exits
# or stays silent for 10 s is killed, and spawn_ready dies saying so.
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.
use strict;
use warnings;

use IO::Handle ();
use IO::Select ();
use POSIX ();
use Time::HiRes qw(time);

sub spawn_ready {
    my ($who, $script, @args) = @_;
    pipe(my $in_r, my $in_w) or die "$who: pipe: $!\n";
    pipe(my $out_r, my $out_w) or die "$who: pipe: $!\n";
    my $pid = fork;
    die "$who: fork: $!\n" if !defined $pid;
    if ($pid == 0) {
        close $in_w;
        close $out_r;
        open STDIN, '<&', $in_r or POSIX::_exit(126);
        open STDOUT, '>&', $out_w or POSIX::_exit(126);
        { exec 'python3', $script, @args; }
        print STDERR "$who: exec python3 failed: $!\n";
        POSIX::_exit(127);
    }
    close $in_r;
    close $out_w;
    $in_w->autoflush(1);

    my $sel = IO::Select->new($out_r);
    my $buf = '';
    my $deadline = time + 10;
    while ($buf !~ /^ready$/m) {
        my $left = $deadline - time;
        my $failure = ($left <= 0 || !$sel->can_read($left)) ? 'did not get ready within 10s'
                    : !sysread($out_r, $buf, 4096, length $buf) ? 'exited before getting ready'
                    : undef;
        next unless $failure;
        close $in_w;
        kill 'TERM', $pid;
        waitpid($pid, 0);
        die "$who $failure\n";
    }
    close $out_r;
    return ($pid, $in_w, $buf);
}

1;
