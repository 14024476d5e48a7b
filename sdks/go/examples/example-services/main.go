// Command example-services plays every participant of sagaflow's example sagas (sagas/*.yaml),
// as protocol/README.md "The example services" describes; the end-to-end tests drive it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"

	participant "github.com/sagaflow/sagaflow/sdks/go"
)

// service is one row of the table: a command type and, optionally, its compensation.
type service struct {
	command, success, failure, field string
	compensation, compensated        string
}

var services = []service{
	{"inventory.reserve_stock", "inventory.stock_reserved", "inventory.out_of_stock", "reservation_id", "inventory.release_stock", "inventory.stock_released"},
	{"payments.authorize", "payments.authorized", "payments.declined", "authorization_id", "payments.void_authorization", "payments.authorization_voided"},
	{"payments.capture", "payments.captured", "payments.capture_rejected", "payment_id", "", ""},
	{"shipping.create_shipment", "shipping.shipment_created", "shipping.carrier_unavailable", "tracking_number", "", ""},
	{"billing.create_account", "billing.account_created", "billing.account_rejected", "billing_account_id", "billing.close_account", "billing.account_closed"},
	{"billing.start_subscription", "billing.subscription_started", "billing.payment_method_missing", "subscription_id", "", ""},
	{"fulfilment.send_gift", "fulfilment.gift_dispatched", "", "", "", ""},
	{"notifications.send_email", "notifications.email_sent", "", "", "", ""},
	{"travel.flight.book", "travel.flight.booked", "travel.flight.sold_out", "booking_ref", "travel.flight.cancel", "travel.flight.cancelled"},
	{"travel.hotel.book", "travel.hotel.booked", "travel.hotel.no_vacancy", "reservation_id", "travel.hotel.cancel", "travel.hotel.cancelled"},
	{"travel.car.book", "travel.car.booked", "travel.car.unavailable", "rental_id", "travel.car.cancel", "travel.car.cancelled"},
	{"travel.trip.confirm", "travel.trip.confirmed", "", "", "", ""},
}

// retryableFailures are the failure types the definitions mark retryable.
var retryableFailures = map[string]bool{"shipping.carrier_unavailable": true}

const defaultTopics = "inventory.commands,payments.commands,shipping.commands,billing.commands," +
	"fulfilment.commands,notifications.commands,travel.flights.commands,travel.hotels.commands," +
	"travel.cars.commands,travel.notifications.commands"

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(logger); err != nil {
		logger.Error("example-services failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	store, closeStore, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	p := participant.New(participant.Config{
		Source:          env("SOURCE", "/example-go"),
		DeadLetterTopic: env("DEAD_LETTER_TOPIC", participant.DefaultDeadLetterTopic),
		Store:           store,
		Logger:          logger,
	})
	failSteps := set(os.Getenv("FAIL_STEPS"))
	for _, s := range services {
		register(p, s, failSteps)
	}
	return p.Run(ctx, participant.KafkaConfig{
		Brokers: list(env("BOOTSTRAP_SERVERS", "localhost:9092")),
		GroupID: env("GROUP_ID", "sagaflow-example-go"),
		Topics:  list(env("TOPICS", defaultTopics)),
	})
}

// openStore is the PostgreSQL store when DATABASE_URL is set, the in-memory one otherwise.
func openStore(ctx context.Context) (participant.Store, func(), error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return participant.NewMemoryStore(), func() {}, nil
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to DATABASE_URL: %w", err)
	}
	store, err := participant.NewPostgresStore(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return store, pool.Close, nil
}

func register(p *participant.Participant, s service, failSteps map[string]bool) {
	p.Register(participant.Registration{
		Phase: participant.PhaseCommand, Type: s.command, Success: s.success, Refusal: s.failure,
		Handler: func(_ context.Context, cmd participant.Command) (participant.Result, error) {
			if failSteps[cmd.Step] && s.failure != "" {
				body := map[string]string{"error": cmd.Step + " failed on purpose"}
				return participant.Failure(s.failure, body, retryableFailures[s.failure]), nil
			}
			body := map[string]string{}
			if s.field != "" {
				body[s.field] = s.field + "-" + cmd.SagaID[:8]
			}
			return participant.Success(body), nil
		},
	})
	if s.compensation == "" {
		return
	}
	p.Register(participant.Registration{
		Phase: participant.PhaseCompensation, Type: s.compensation, Success: s.compensated,
		Handler: func(context.Context, participant.Command) (participant.Result, error) {
			return participant.Success(map[string]bool{"undone": true}), nil
		},
	})
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func list(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func set(s string) map[string]bool {
	out := map[string]bool{}
	for _, item := range list(s) {
		out[item] = true
	}
	return out
}
