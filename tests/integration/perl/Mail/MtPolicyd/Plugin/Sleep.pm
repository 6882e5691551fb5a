package Mail::MtPolicyd::Plugin::Sleep;

# Test plugin for tests/integration (the Perl twin of tests/integration/plugins/sleep.c):
# waits `ms` milliseconds, then returns nothing so the chain goes on. Loaded by the Perl
# mtpolicyd through PERL5LIB=tests/integration/perl, set by the harness.

use Moose;
use namespace::autoclean;
use Time::HiRes ();

extends 'Mail::MtPolicyd::Plugin';

has 'ms' => ( is => 'rw', isa => 'Int', default => 1000 );

sub run {
    my ( $self, $r ) = @_;
    Time::HiRes::sleep( $self->ms / 1000 ) if $self->ms > 0;
    return;
}

__PACKAGE__->meta->make_immutable;

1;
