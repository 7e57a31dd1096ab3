use machine_state::{MachineState, State};

#[derive(Clone, Debug)]
struct Running;

impl MachineState for Running {
    const STATE: State = State::Processing;
}

fn main() {}
