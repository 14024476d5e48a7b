package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
)

// refusedBody is the body of a refusal: the command came after its step's compensation.
var refusedBody = json.RawMessage(`{"error":"the step was compensated before it ran"}`)

// decide applies the decision table of protocol/README.md to one decoded message, holding the
// store's lock. It returns the outcome to reply with (nil: no reply) and the one to store.
func (p *Participant) decide(ctx context.Context, env envelope, reg Registration, stored Outcomes) (*Outcome, *Save, error) {
	if env.cmd.Phase == PhaseCommand {
		return p.decideCommand(ctx, env, reg, stored)
	}
	return p.decideCompensation(ctx, env, reg, stored)
}

func (p *Participant) decideCommand(ctx context.Context, env envelope, reg Registration, stored Outcomes) (*Outcome, *Save, error) {
	if reusable(stored.Command, env.cmd.ID) {
		return stored.Command, nil, nil
	}
	// Checked after the stored command outcome, so that a new attempt after a retryable failure
	// is refused too once the step was compensated: a command never runs after that.
	if stored.Compensation != nil {
		if reg.Refusal == "" {
			return nil, nil, nil
		}
		o := Outcome{CommandID: env.cmd.ID, ReplyType: reg.Refusal, Payload: refusedBody}
		return &o, &Save{Phase: PhaseCommand, Outcome: o}, nil
	}
	return p.run(ctx, env, reg)
}

func (p *Participant) decideCompensation(ctx context.Context, env envelope, reg Registration, stored Outcomes) (*Outcome, *Save, error) {
	if reusable(stored.Compensation, env.cmd.ID) {
		return stored.Compensation, nil, nil
	}
	// The store does not say whether a command outcome was a success; a reply type that some
	// command registration declares as its success type is one.
	if stored.Command != nil && p.successTypes[stored.Command.ReplyType] {
		return p.run(ctx, env, reg)
	}
	o := Outcome{CommandID: env.cmd.ID, ReplyType: reg.Success, Payload: json.RawMessage(`{}`)}
	return &o, &Save{Phase: PhaseCompensation, Outcome: o}, nil
}

// reusable tells whether a stored outcome answers this message: always, unless it is a
// retryable failure of another command id (a new attempt, evaluated afresh).
func reusable(o *Outcome, commandID string) bool {
	return o != nil && (!o.Retryable || o.CommandID == commandID)
}

// run calls the handler and turns its result into the outcome to reply with and store.
func (p *Participant) run(ctx context.Context, env envelope, reg Registration) (*Outcome, *Save, error) {
	res, err := p.callHandler(ctx, env, reg)
	if err != nil {
		return nil, nil, err
	}
	o := Outcome{CommandID: env.cmd.ID, ReplyType: reg.Success}
	if res.failure {
		if res.replyType == "" {
			return nil, nil, errors.New("participant: a Failure needs a reply type")
		}
		o.ReplyType, o.Retryable = res.replyType, res.retryable
	}
	if o.Payload, err = json.Marshal(res.payload); err != nil {
		return nil, nil, fmt.Errorf("participant: encoding the %s payload: %w", o.ReplyType, err)
	}
	return &o, &Save{Phase: env.cmd.Phase, Outcome: o}, nil
}

// callHandler calls the handler and turns a panic into an error, so that it is handled like
// one (store rolled back, nothing sent, retried after a backoff) instead of ending the process.
func (p *Participant) callHandler(ctx context.Context, env envelope, reg Registration) (res Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.cfg.Logger.Error("handler panicked", "phase", env.cmd.Phase, "type", env.cmd.Type,
				"saga_id", env.cmd.SagaID, "step", env.cmd.Step, "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("participant: the %s handler of %s panicked: %v", env.cmd.Phase, env.cmd.Type, v)
		}
	}()
	return reg.Handler(ctx, env.cmd)
}
