#!/usr/bin/perl
# cfg_dump.pl FILE: the tree Config::General builds for FILE with mtpolicyd 2.05's options
# (Mail/MtPolicyd.pm: -AllowMultiOptions => 'no', -Tie => 'Tie::IxHash'), printed as
# cfg_dump.c prints ours. Exit status 77 when Config::General or Tie::IxHash is missing.
use strict;
use warnings;

BEGIN {
    for my $m (qw(Config::General Tie::IxHash)) {
        eval "require $m; 1" or do { print STDERR "$m is not installed\n"; exit 77 };
    }
}

sub esc {
    my ($s) = @_;
    $s =~ s/([^!-~]|%)/sprintf("%%%02X", ord($1))/ge;
    return $s;
}

sub dump_hash {
    my ($h, $depth) = @_;
    for my $k (keys %$h) {
        my $v = $h->{$k};
        if (ref $v eq 'HASH') {
            print "H $depth ", esc($k), "\n";
            dump_hash($v, $depth + 1);
        } elsif (ref $v) {
            die "unexpected " . ref($v) . " for $k\n";
        } else {
            # Intentional difference: an option written without a value is undef in Perl and
            # "" in ringpolicyd (config.c); both print as empty here.
            print "S $depth ", esc($k), " ", esc(defined $v ? $v : ''), "\n";
        }
    }
}

tie my %config, 'Tie::IxHash';
my $ok = eval {
    %config = Config::General::ParseConfig(
        -AllowMultiOptions => 'no',
        -ConfigFile        => $ARGV[0],
        -Tie               => 'Tie::IxHash'
    );
    1;
};
if (!$ok) {
    print "ERROR\n";
    print STDERR $@;
    exit 1;
}
dump_hash(\%config, 0);
