// Package participant is the Go participant library of sagaflow: it consumes saga commands and
// compensations from Kafka, hands each to the handler registered for its type, and replies.
//
// The contract it implements is protocol/README.md of the sagaflow repository: decoding of the
// CloudEvents envelope, dead-lettering, the decision table (deduplication, refusal of a command
// after its compensation, "nothing to undo"), the reply headers, the consumer settings, tracing
// and graceful shutdown. A user only writes one handler per command or compensation type:
//
//	p := participant.New(participant.Config{Source: "/payments", Store: participant.NewMemoryStore()})
//	p.Register(participant.Registration{
//		Phase: participant.PhaseCommand, Type: "payments.authorize",
//		Success: "payments.authorized", Refusal: "payments.declined",
//		Handler: func(ctx context.Context, cmd participant.Command) (participant.Result, error) {
//			return participant.Success(map[string]string{"authorization_id": "auth-1"}), nil
//		},
//	})
//	err := p.Run(ctx, participant.KafkaConfig{Brokers: []string{"localhost:9092"},
//		GroupID: "payments", Topics: []string{"payments.commands"}})
package participant
