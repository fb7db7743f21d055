package Test::LB::Dns;

# Starts t/dns.py (an authoritative DNS responder on 127.0.0.1, UDP and TCP) for a test and
# rewrites its answers while nginx runs:
#
#     use lib 't/lib';
#     use Test::LB::Dns;
#     my $dns = Test::LB::Dns->start(a => { 'backend.test' => ['127.0.0.1'] });
#     ... "resolver 127.0.0.1:" . $dns->port . " valid=1s;" in the nginx config ...
#     my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
#     $dns->wait_asked('backend.test', $serial, 5);   # nginx has asked since the change
#     $dns->stop;                                     # or let the object go / the test end
#
# The answers are t/dns.py's JSON format (see the top of t/dns.py): ttl, a, aaaa, srv,
# nxdomain, servfail, drop. set() replaces all of them (keys not given are absent; ttl
# defaults to 1) and writes the file atomically (temporary file, then rename); it returns a
# serial number that t/dns.py copies into its query log, so that wait_asked() can tell the
# queries answered from the new file from the older ones.
#
# The port is the kernel's choice (t/dns.py binds port 0 and reports it), or start(port => N).
# The script's stdin is a pipe from this process: it exits when we exit, even on a crash; END
# stops every responder anyway. It also gives up by itself after $ENV{TEST_LB_DNS_LIFETIME}
# seconds (default 900).
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec ();
use File::Temp ();
use JSON::PP ();
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use Test::LB::Child ();

my $Script = abs_path(File::Spec->catfile(dirname(__FILE__), '..', '..', '..', 'dns.py'));
my %Running;    # pid => object, for END

sub script { $Script }

# Test::LB::Dns->start(%answers) or ->start(port => N, dir => DIR, answers => \%answers).
sub start {
    my ($class, %args) = @_;
    my %opt;
    for my $k (qw(port dir answers)) {
        $opt{$k} = delete $args{$k} if exists $args{$k};
    }
    my $answers = $opt{answers} || \%args;
    my $self = bless { serial => 0 }, $class;
    if ($opt{dir}) {
        $self->{dir} = $opt{dir};
    } else {
        $self->{tmp} = File::Temp->newdir('lb-dns-XXXXXX', TMPDIR => 1);
        $self->{dir} = $self->{tmp}->dirname;
    }
    $self->{file} = "$self->{dir}/dns-answers.json";
    $self->{log}  = "$self->{dir}/dns-queries.log";
    unlink $self->{log};
    $self->set(%$answers);

    my $lifetime = $ENV{TEST_LB_DNS_LIFETIME} || 900;
    my ($pid, $stdin, $buf) = Test::LB::Child::spawn_ready(
        'Test::LB::Dns: t/dns.py', $Script, '--lifetime', $lifetime, '--log', $self->{log},
        $opt{port} || 0, $self->{file});
    $self->{pid} = $pid;
    $self->{owner} = $$;
    $self->{stdin} = $stdin;
    $Running{$pid} = $self;
    ($self->{port}) = $buf =~ /^dns=(\d+)$/m
        or die "Test::LB::Dns: no port in '$buf'\n";
    return $self;
}

sub port { $_[0]{port} }
sub file { $_[0]{file} }
sub serial { $_[0]{serial} }

# Replaces the answers (a => {...}, srv => {...}, nxdomain => [...], drop => 1, ...); returns
# the new serial.
sub set {
    my ($self, %answers) = @_;
    my %data = (ttl => 1, %answers);
    for my $k (qw(drop servfail)) {    # booleans as JSON booleans
        $data{$k} = $data{$k} ? JSON::PP::true : JSON::PP::false
            if exists $data{$k} && !ref $data{$k};
    }
    $data{serial} = ++$self->{serial};
    my $tmp = "$self->{file}.tmp.$$";
    open my $fh, '>', $tmp or die "Test::LB::Dns: $tmp: $!\n";
    print $fh JSON::PP->new->canonical->encode(\%data);
    close $fh or die "Test::LB::Dns: $tmp: $!\n";
    rename $tmp, $self->{file} or die "Test::LB::Dns: rename to $self->{file}: $!\n";
    return $self->{serial};
}

# The query log: a list of { time, proto, type, name, result, serial } (result: "NOERROR/2",
# "NXDOMAIN/0", "TRUNCATED/40", "DROP", "MALFORMED", ...).
sub queries {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return ();
    my @q;
    while (my $line = <$fh>) {
        next unless $line =~ /\n\z/;    # a line being written
        my @f = split ' ', $line;
        next unless @f == 6;
        push @q, { time => $f[0], proto => $f[1], type => $f[2], name => $f[3],
                   result => $f[4], serial => $f[5] };
    }
    return @q;
}

# Queries for $name (any type unless $type) answered from serial >= $serial (default: the
# current one).
sub asked {
    my ($self, $name, $serial, $type) = @_;
    $serial //= $self->{serial};
    return grep {
        lc $_->{name} eq lc $name && $_->{serial} =~ /^\d+$/ && $_->{serial} >= $serial
            && (!defined $type || $_->{type} eq $type)
    } $self->queries;
}

# Waits up to $seconds for a query for $name answered from serial >= $serial (the last set()
# by default); then a little longer, so that the asker has processed the answer. Returns true
# if it came.
sub wait_asked {
    my ($self, $name, $serial, $seconds, $type) = @_;
    my $until = time + ($seconds // 5);
    while (time < $until) {
        if ($self->asked($name, $serial, $type)) {
            sleep 0.1;
            return 1;
        }
        sleep 0.02;
    }
    return 0;
}

sub stop {
    my ($self) = @_;
    return if ($self->{owner} // $$) != $$;    # not in a forked child
    my $pid = delete $self->{pid} or return;
    delete $Running{$pid};
    close delete $self->{stdin} if $self->{stdin};
    kill 'TERM', $pid;
    for (1 .. 100) {
        last if waitpid($pid, WNOHANG) != 0;
        sleep 0.02;
    }
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@);
    $self->stop if $self->{pid};
}

END {
    my $status = $?;
    $_->stop for grep { $_->{owner} == $$ } values %Running;
    $? = $status;
}

1;
